//! Times adgraph's matrix product (`kernels::gemm::sgemm`) on the products of
//! the benchmark workloads W1-W3 and W8 (forward and both gradients, in the layouts
//! the MatMul op hands it) and of W4's convolutions (patch matrices), one line
//! per product (kernel gradients, `dk`, as conv2d computes them: two halves
//! of the sum side by side where that pays):
//!
//! ```text
//! cargo run --release --example gemm_shapes            # all of them
//! cargo run --release --example gemm_shapes -- W2      # labels starting with W2
//! ```
//!
//! Each figure is the best of five timed loops of the same product into the
//! same (cache-hot) result, so it measures the kernel, not the step around it.

use std::time::Instant;

use adgraph::kernels::gemm::{matmul_vec_split_inner, sgemm};
use ndarray::Array2;

/// One product: label, `[m, k] x [k, n]`, and whether `a`, `b` come as
/// transposed views (a weight gradient `xᵀ · dy`, an input gradient `dy · wᵀ`).
struct Product {
    label: &'static str,
    m: usize,
    k: usize,
    n: usize,
    a_transposed: bool,
    b_transposed: bool,
}

const fn product(label: &'static str, m: usize, k: usize, n: usize, at: bool, bt: bool) -> Product {
    Product {
        label,
        m,
        k,
        n,
        a_transposed: at,
        b_transposed: bt,
    }
}

const PRODUCTS: [Product; 42] = [
    product("W1 x·w1", 300, 2, 50, false, false),
    product("W1 h1·w2", 300, 50, 50, false, false),
    product("W1 h2·w3", 300, 50, 3, false, false),
    product("W1 dw1", 2, 300, 50, true, false),
    product("W1 dh1", 300, 50, 50, false, true),
    product("W1 dw2", 50, 300, 50, true, false),
    product("W1 dh2", 300, 3, 50, false, true),
    product("W1 dw3", 50, 300, 3, true, false),
    product("W2 x·w", 100, 784, 10, false, false),
    product("W2 dw", 784, 100, 10, true, false),
    product("W3 x·w1", 50, 784, 100, false, false),
    product("W3 h1·w2", 50, 100, 100, false, false),
    product("W3 h2·w3", 50, 100, 10, false, false),
    product("W3 dw1", 784, 50, 100, true, false),
    product("W3 dh1", 50, 100, 100, false, true),
    product("W3 dw2", 100, 50, 100, true, false),
    product("W3 dh2", 50, 10, 100, false, true),
    product("W3 dw3", 100, 50, 10, true, false),
    product("W4 c0 fwd", 39200, 9, 16, false, false),
    product("W4 c1 fwd", 9800, 144, 32, false, false),
    product("W4 c1 dx", 9800, 32, 144, false, true),
    product("W4 c2 fwd", 9800, 288, 64, false, false),
    product("W4 c2 dx", 9800, 64, 288, false, true),
    product("W4 c3 fwd", 2450, 576, 128, false, false),
    product("W4 c3 dx", 2450, 128, 576, false, true),
    product("W4 c4 fwd", 800, 1152, 256, false, false),
    product("W4 c4 dx", 800, 256, 1152, false, true),
    product("W4 c0 dk", 9, 39200, 16, true, false),
    product("W4 c1 dk", 144, 9800, 32, true, false),
    product("W4 c2 dk", 288, 9800, 64, true, false),
    product("W4 c3 dk", 576, 2450, 128, true, false),
    product("W4 c4 dk", 1152, 800, 256, true, false),
    product("W8 x·wx", 1024, 32, 512, false, false),
    product("W8 dwx", 32, 1024, 512, true, false),
    product("W8 dwx dk", 32, 1024, 512, true, false),
    product("W8 dwxT", 512, 1024, 32, true, false),
    product("W8 dx", 1024, 512, 32, false, true),
    product("W8 h·wh", 64, 128, 512, false, false),
    product("W8 dwh", 128, 64, 512, true, false),
    product("W8 dh", 64, 512, 128, false, true),
    product("W8 h·wo", 1024, 128, 27, false, false),
    product("W8 dwo", 128, 1024, 27, true, false),
];

/// A matrix of small non-zero values, `[rows, cols]` or its transpose.
fn operand(rows: usize, cols: usize, transposed: bool) -> Array2<f32> {
    let fill = |(i, j): (usize, usize)| ((i * 7 + j * 3) % 11) as f32 * 0.1 - 0.5;
    if transposed {
        Array2::from_shape_fn((cols, rows), fill).reversed_axes()
    } else {
        Array2::from_shape_fn((rows, cols), fill)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    adgraph::init_thread_pool(None)?;
    let only = std::env::args().nth(1).unwrap_or_default();
    let mut total_us = 0.0;
    for p in PRODUCTS.iter().filter(|p| p.label.starts_with(&only)) {
        let a = operand(p.m, p.k, p.a_transposed);
        let b = operand(p.k, p.n, p.b_transposed);
        let mut c = Array2::<f32>::zeros((p.m, p.n));
        let flops = 2 * p.m * p.n * p.k;
        // About 10 ms per timed loop.
        let iters = (20_000_000 / (flops + 20_000)).clamp(20, 200_000);
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..iters {
                if p.label.ends_with("dk") {
                    // As conv2d's backward computes a kernel gradient.
                    std::hint::black_box(matmul_vec_split_inner(a.view(), b.view()));
                } else {
                    sgemm(1.0, a.view(), b.view(), 0.0, &mut c.view_mut());
                }
            }
            best = best.min(t.elapsed().as_secs_f64() / iters as f64);
        }
        total_us += best * 1e6;
        println!(
            "{:9} [{},{}]x[{},{}] {:8.2} us {:6.1} GFLOP/s",
            p.label,
            p.m,
            p.k,
            p.k,
            p.n,
            best * 1e6,
            flops as f64 / best / 1e9
        );
    }
    println!("total {total_us:.1} us");
    Ok(())
}
