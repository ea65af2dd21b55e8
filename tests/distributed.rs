//! adgraph::distributed, in one test (MPI starts once per process).
//!
//! `cargo test --release --features mpi --test distributed` runs it as a world
//! of one process; `.ci/run` runs the same binary under
//! `mpirun -np 2`, where every check compares two ranks. It checks:
//! - the collectives: allreduce, agreement checks, broadcasts of bytes and
//!   variables, gradient averaging in several buckets, weighted shares, batch
//!   sharding, balanced shares (a slow rank gets fewer rows);
//! - `cross_replica_sum`: its value and gradient, with equal and unequal
//!   shares (and, in a world of one, first and second derivatives of it and of
//!   `sync_batch_norm` by finite differences);
//! - `sync_batch_norm` with a different number of rows on every rank against
//!   `fused_batch_norm` on all of them in one process;
//! - "same answer": a network without batch norm, trained distributed
//!   (N ranks × batch 50/N) for 50 steps, ends with the final loss of one
//!   process with batch 50 to a relative 1e-4, and a second distributed run
//!   gives the same bits; likewise a conv net with synchronised batch norm
//!   against one process with the fused batch norm, also with balanced shares;
//! - the sharded update (`ShardedOptimizer`, which the trainer uses for Adam
//!   with `Distributed::set_shard_optimizer`):
//!   the same bits as averaging the whole gradient on every rank
//!   (`AveragedOptimizer`), also in many small buckets whose blocks cut
//!   through the variables; its gathered state equals one process's Adam
//!   state; a checkpoint of it resumes on N ranks to the same bits as an
//!   uninterrupted run, and on one process.
//!
//! Every rank prints its summary; a failure fails (and, under mpirun, aborts)
//! the job.

use adgraph::{self as ad, data::Batches, distributed::*, gradcheck::GradCheck};
use adgraph::{init::*, optim::Adam, train::Trainer, BatchNormConfig, Feed, Graph, Node, Tensor};
use std::path::Path;

/// What the checks found.
#[derive(Default)]
struct Outcome {
    passed: usize,
    failed: Vec<String>,
}

impl Outcome {
    fn check(&mut self, name: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(format!("{name}: {}", detail()));
        }
    }
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

fn collectives(d: &Distributed, out: &mut Outcome) -> ad::Result<()> {
    let (rank, size) = (d.rank(), d.size());
    // Allreduce: Σ_r (r + 1 + i).
    let mut data: Vec<f32> = (0..1000).map(|i| (rank + 1 + i) as f32).collect();
    d.all_reduce_sum(&mut data);
    let want: Vec<f32> = (0..1000)
        .map(|i| (0..size).map(|r| (r + 1 + i) as f32).sum())
        .collect();
    out.check("all_reduce_sum", data == want, || {
        format!("{:?} != {:?}", &data[..3], &want[..3])
    });

    // Agreement checks.
    out.check(
        "check_same on equal values",
        d.check_same("a constant", 7).is_ok(),
        String::new,
    );
    let differs = d.check_same("the rank", rank as u64);
    out.check(
        "check_same on differing values",
        differs.is_err() == (size > 1),
        || format!("{differs:?}"),
    );
    if let Err(e) = differs {
        out.check(
            "check_same names what",
            e.to_string().contains("the rank"),
            || e.to_string(),
        );
    }

    // Broadcast of bytes (rank 0's, whatever the others held).
    let mut bytes = if rank == 0 {
        b"rank zero's bytes".to_vec()
    } else {
        vec![9; 3]
    };
    d.broadcast_bytes(&mut bytes);
    out.check("broadcast_bytes", bytes == b"rank zero's bytes", || {
        format!("{bytes:?}")
    });

    // Averages in many small buckets (64 bytes: 16 elements) and one big one.
    let a = Tensor::from_shape_fn(vec![5, 7], |i| (rank * 100 + i[0] * 7 + i[1]) as f32);
    let b = Tensor::from_shape_fn(vec![3], |i| -((rank + i[0]) as f32));
    for bucket in [64, DEFAULT_BUCKET_BYTES] {
        d.set_bucket_bytes(bucket);
        let before = d.stats().gradient_calls;
        let avg = d.average_tensors(&[&a, &b])?;
        let calls = d.stats().gradient_calls - before;
        let want_a = Tensor::from_shape_fn(vec![5, 7], |i| {
            (0..size)
                .map(|r| (r * 100 + i[0] * 7 + i[1]) as f32)
                .sum::<f32>()
                / size as f32
        });
        let want_b = Tensor::from_shape_fn(vec![3], |i| {
            -(0..size).map(|r| (r + i[0]) as f32).sum::<f32>() / size as f32
        });
        let close = |x: &Tensor, y: &Tensor| {
            x.shape() == y.shape()
                && x.iter()
                    .zip(y)
                    .all(|(p, q)| (p - q).abs() <= 1e-4 * q.abs().max(1.0))
        };
        out.check(
            &format!("average_tensors, bucket of {bucket} bytes"),
            close(&avg[0], &want_a) && close(&avg[1], &want_b),
            || format!("{:?} / {:?}", avg[1], want_b),
        );
        let want_calls = if size == 1 {
            0
        } else {
            38usize.div_ceil(bucket / 4) as u64
        };
        out.check(
            &format!("allreduce calls, bucket of {bucket} bytes"),
            calls == want_calls,
            || format!("{calls} calls, expected {want_calls}"),
        );
    }
    d.set_bucket_bytes(DEFAULT_BUCKET_BYTES);

    // A layout that differs between ranks is an error on every rank.
    if size > 1 {
        let odd = Tensor::zeros(vec![rank + 1]);
        let r = d.average_tensors(&[&odd]);
        out.check("average_tensors of differing layouts", r.is_err(), || {
            format!("{r:?}")
        });
    }

    // Shares: rows of a global batch, in rank order, cover it.
    let range = d.rows_of(50)?;
    let mut starts = vec![range.start as f64, range.len() as f64];
    d.all_reduce_sum_f64(&mut starts);
    let expected_start: usize = (0..size).map(|r| r * 50 / size).sum();
    out.check(
        "rows_of",
        starts[0] as usize == expected_start && starts[1] as usize == 50,
        || format!("{range:?}, sums {starts:?}"),
    );
    let x = Tensor::from_shape_fn(vec![7, 2], |i| (i[0] * 2 + i[1]) as f32);
    let y = Tensor::from_shape_fn(vec![7, 1], |i| i[0] as f32);
    let (xs, ys) = d.shard(x.clone(), y)?;
    let r = d.rows_of(7)?;
    out.check(
        "shard",
        xs.shape()[0] == r.len()
            && ys[[0, 0]] == r.start as f32
            && (d.share() - r.len() as f32 / 7.0).abs() < 1e-7,
        || format!("{:?} rows, share {}", xs.shape(), d.share()),
    );
    // The weighted average with unequal shares is the global mean.
    let g = Tensor::from_shape_fn(vec![1], |_| ys.iter().sum::<f32>() / ys.len() as f32);
    let avg = d.average_tensors(&[&g])?;
    out.check(
        "weighted average over unequal shares",
        (avg[0][0] - 3.0).abs() < 1e-6,
        || format!("{} != 3 (mean of 0..7)", avg[0][0]),
    );
    d.set_share(1, size);

    // Balanced shares: a rank that is slow (rank 0 sleeps before each
    // gradient average) is given fewer rows; the ranks' rows still cover
    // each batch once, in rank order, and their shares add up to 1.
    d.set_balance(true);
    let x = Tensor::from_shape_fn(vec![40, 1], |i| i[0] as f32);
    let mut covered = true;
    let mut first_rows = 0;
    for _ in 0..4 {
        let (xs, _) = d.shard(x.clone(), x.clone())?;
        let mut seen = vec![0.0f64; 41];
        for v in &xs {
            seen[*v as usize] += 1.0;
        }
        seen[40] = f64::from(d.share());
        d.all_reduce_sum_f64(&mut seen);
        covered &= seen[..40].iter().all(|&c| c == 1.0) && (seen[40] - 1.0).abs() < 1e-6;
        first_rows = xs.len();
        if rank == 0 && size > 1 {
            std::thread::sleep(std::time::Duration::from_millis(60));
        }
        d.average_tensors(&[&Tensor::from_elem(vec![1], 1.0)])?;
    }
    let (xs, _) = d.shard(x.clone(), x.clone())?;
    out.check("balanced shards cover each batch once", covered, || {
        "a row missing or twice, or shares not adding up to 1".into()
    });
    out.check(
        "balanced shards: the slow rank takes fewer rows",
        size == 1 || rank != 0 || (xs.len() < 40 / size && !xs.is_empty()),
        || {
            format!(
                "rank 0 takes {} of 40 rows (last step {first_rows})",
                xs.len()
            )
        },
    );
    d.average_tensors(&[&Tensor::from_elem(vec![1], 1.0)])?;
    d.set_balance(false);
    d.set_share(1, size);
    out.check(
        "shard of too few rows",
        d.rows_of(size - 1).is_err(),
        String::new,
    );

    // Variables: rank 0's everywhere afterwards.
    let graph = Graph::new();
    let v = graph.variable(&[2, 2], Zeros, true)?;
    let w = graph.variable(&[3], Zeros, false)?;
    graph.set_variable_value(&v, Tensor::from_elem(vec![2, 2], rank as f32 + 0.5))?;
    graph.set_variable_value(&w, Tensor::from_elem(vec![3], -(rank as f32)))?;
    d.broadcast_variables(&graph)?;
    let ok = graph.variable_value(&v)?.iter().all(|&e| e == 0.5)
        && graph.variable_value(&w)?.iter().all(|&e| e == 0.0);
    out.check("broadcast_variables", ok, || {
        format!("{:?}", graph.variable_value(&v))
    });
    Ok(())
}

fn cross_replica(d: &Distributed, out: &mut Outcome) -> ad::Result<()> {
    let (rank, size) = (d.rank(), d.size());
    let g = Graph::new();
    let x = g.placeholder([3]);
    let y = cross_replica_sum(&x, d)?;
    let loss = ad::reduce_sum(&(&y * &y), ad::Axes::All, false)?;
    let feed = Feed::new().with(&x, Tensor::from_shape_fn(vec![3], |i| (rank + i[0]) as f32))?;
    let mut rt = ad::RunTime::new();
    let sum: Vec<f32> = (0..3)
        .map(|i| (0..size).map(|r| (r + i) as f32).sum())
        .collect();
    let value: Vec<f32> = rt.forward(&y, &feed)?.iter().copied().collect();
    out.check("cross_replica_sum value", value == sum, || {
        format!("{value:?} != {sum:?}")
    });
    // Training minimises J = Σ_s w_s L_s (w: the ranks' shares, here each
    // L_s = Σ y², y the same on every rank), and rank r's gradient is
    // (1/w_r) ∂J/∂x_r = Σ_s w_s 2y / w_r = 2y / w_r: 2 · size · y for equal
    // shares, and so for shares (r + 1) / Σ_q (q + 1).
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(p, q)| (p - q).abs() <= 1e-5 * q.abs().max(1.0))
    };
    for weights in ["equal", "unequal"] {
        if weights == "unequal" {
            d.set_share(rank + 1, size * (size + 1) / 2);
        }
        let w = d.share();
        let mut rt = ad::RunTime::new();
        rt.backward(&loss, &feed, None)?;
        let grad: Vec<f32> = rt.grad(&x)?.iter().copied().collect();
        let want: Vec<f32> = sum.iter().map(|s| 2.0 * s / w).collect();
        out.check(
            &format!("cross_replica_sum gradient, {weights} shares"),
            close(&grad, &want),
            || format!("{grad:?} != {want:?}"),
        );
    }
    d.set_share(1, size);

    // Bad inputs are errors naming what is wrong.
    let bn = Graph::new();
    let bx = bn.placeholder(ad::shape![None, 3]);
    let (bs, bo) = (
        bn.variable(&[3], Ones, true)?,
        bn.variable(&[3], Zeros, true)?,
    );
    let not_a_variable = bn.placeholder([3]);
    let mv = bn.variable(&[3], Ones, false)?;
    let r = sync_batch_norm(
        &bx,
        &bs,
        &bo,
        &not_a_variable,
        &mv,
        BatchNormConfig::default(),
        d,
    );
    out.check(
        "sync_batch_norm with a moving mean that is not a variable",
        r.as_ref().is_err_and(|e| {
            e.to_string().contains("Variable") || e.to_string().contains("variable")
        }),
        || format!("{r:?}"),
    );
    let wide = bn.variable(&[4], Zeros, false)?;
    let r = sync_batch_norm(&bx, &bs, &bo, &wide, &mv, BatchNormConfig::default(), d);
    out.check(
        "sync_batch_norm with 4 moving means for 3 channels",
        r.is_err(),
        || format!("{r:?}"),
    );
    let stat = bn.placeholder([4]);
    let count = bn.placeholder([1]);
    let r = bn.add_op(
        AssignMovingAverage {
            decay: 0.9,
            bessel: false,
        },
        &[&stat, &mv, &count],
    );
    out.check(
        "AssignMovingAverage of 4 values for a moving statistic of 3",
        r.as_ref().is_err_and(|e| e.to_string().contains("channel")),
        || format!("{r:?}"),
    );
    let r = bn.add_op(
        AssignMovingAverage {
            decay: 1.5,
            bessel: false,
        },
        &[&stat, &wide, &count],
    );
    out.check(
        "AssignMovingAverage with decay 1.5",
        r.as_ref().is_err_and(|e| e.to_string().contains("decay")),
        || format!("{r:?}"),
    );
    let r = bn.add_op(
        AssignMovingAverage {
            decay: 0.9,
            bessel: true,
        },
        &[&stat, &wide, &stat],
    );
    out.check(
        "AssignMovingAverage with a count of 4 values",
        r.as_ref().is_err_and(|e| e.to_string().contains("count")),
        || format!("{r:?}"),
    );
    let scalar = bn.placeholder(ad::TensorShape::known(&[]));
    let r = bn.add_op(ad::distributed::ChannelCount, &[&scalar]);
    out.check(
        "ChannelCount of a scalar",
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("ChannelCount")),
        || format!("{r:?}"),
    );

    // Ranks holding different numbers of rows (rank r: r + 2 rows of one
    // global batch): each rank's output and the moving statistics are those
    // of the fused batch norm over the whole batch on one process.
    {
        let c = 3;
        let starts: Vec<usize> = (0..=size).map(|r| (0..r).map(|q| q + 2).sum()).collect();
        let (lo, hi, global) = (starts[d.rank()], starts[d.rank() + 1], starts[size]);
        let all = Tensor::from_shape_fn(vec![global, 2, 2, c], |i| {
            ((i[0] * 13 + i[1] * 5 + i[2] * 3 + i[3] * 7) % 17) as f32 / 4.0 - 2.0
        });
        let config = BatchNormConfig {
            epsilon: 1e-3,
            decay: 0.5,
            ..Default::default()
        };
        let run =
            |rows: std::ops::Range<usize>, sync: bool| -> ad::Result<(Tensor, Tensor, Tensor)> {
                let g = Graph::with_seed(6);
                let x = g.placeholder(ad::shape![None, 2, 2, c]);
                let scale = g.variable(&[c], Ones, true)?;
                let offset = g.variable(&[c], Zeros, true)?;
                let mm = g.variable(&[c], Zeros, false)?;
                let mv = g.variable(&[c], Ones, false)?;
                let y = if sync {
                    sync_batch_norm(&x, &scale, &offset, &mm, &mv, config, d)?
                } else {
                    ad::fused_batch_norm(&x, &scale, &offset, &mm, &mv, config)?
                };
                let part = all.slice_axis(ndarray::Axis(0), rows.into()).to_owned();
                let feed = Feed::new().with(&x, part)?;
                let y = ad::RunTime::new().forward(&y, &feed)?.clone();
                Ok((y, g.variable_value(&mm)?, g.variable_value(&mv)?))
            };
        let (y, mm, mv) = run(lo..hi, true)?;
        let (fy, fmm, fmv) = run(0..global, false)?;
        let fy = fy.slice_axis(ndarray::Axis(0), (lo..hi).into()).to_owned();
        let diff = |a: &Tensor, b: &Tensor| {
            a.iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        };
        let (dy, dm, dv) = (diff(&y, &fy), diff(&mm, &fmm), diff(&mv, &fmv));
        out.check(
            &format!(
                "sync_batch_norm with {} of {global} rows on rank {} = fused_batch_norm",
                hi - lo,
                d.rank()
            ),
            dy < 1e-5 && dm < 1e-6 && dv < 1e-5,
            || format!("max difference {dy:e}, moving mean {dm:e}, moving variance {dv:e}"),
        );
    }

    if size == 1 {
        // Finite differences see one rank's loss, which is the whole objective
        // only in a world of one.
        let xs = g.placeholder([4]);
        let cube = cross_replica_sum(&(&xs * &xs * &xs), d)?;
        let feed = Feed::new().with(&xs, ad::tensor([0.5f32, -1.0, 2.0, 0.3]))?;
        let first = ad::gradcheck::check_gradients(&cube, &[&xs], &feed);
        out.check("cross_replica_sum first derivatives", first.is_ok(), || {
            format!("{first:?}")
        });
        let second = ad::gradcheck::check_second_derivatives(&cube, &[&xs], &feed);
        out.check(
            "cross_replica_sum second derivatives",
            second.is_ok(),
            || format!("{second:?}"),
        );

        for shape in [[6usize, 3].as_slice(), [2, 3, 3, 4].as_slice()] {
            let g = Graph::with_seed(5);
            let c = shape[shape.len() - 1];
            let mut dims: Vec<Option<usize>> = shape.iter().map(|&s| Some(s)).collect();
            dims[0] = None;
            let x = g.placeholder(ad::TensorShape::new(dims));
            let scale = g.placeholder([c]);
            let offset = g.placeholder([c]);
            let mm = g.variable(&[c], Zeros, false)?;
            let mv = g.variable(&[c], Ones, false)?;
            let config = BatchNormConfig {
                epsilon: 1e-2,
                decay: 0.5,
                ..Default::default()
            };
            let y = sync_batch_norm(&x, &scale, &offset, &mm, &mv, config, d)?;
            let values = |n: usize, k: u64| {
                Tensor::from_shape_fn(vec![n], move |i| {
                    ((i[0] as u64 * 7 + k * 3) % 11) as f32 / 5.0 - 1.0
                })
            };
            let xv = values(shape.iter().product(), 1)
                .into_shape_with_order(shape.to_vec())
                .unwrap();
            let feed = Feed::new()
                .with(&x, xv)?
                .with(&scale, values(c, 2).mapv(|v| v + 1.5))?
                .with(&offset, values(c, 3))?;
            let check = GradCheck {
                eps: 1e-2,
                atol: 5e-3,
                rtol: 5e-3,
                seed: 3,
            };
            let first = check.check(&y, &[&x, &scale, &offset], &feed);
            out.check(
                &format!("sync_batch_norm {shape:?} first derivatives"),
                first.is_ok(),
                || format!("{first:?}"),
            );
            let check2 = GradCheck {
                eps: 1e-2,
                atol: 2e-2,
                rtol: 2e-2,
                seed: 3,
            };
            let second = check2.check_second_order(&y, &[&x, &scale], &feed);
            out.check(
                &format!("sync_batch_norm {shape:?} second derivatives"),
                second.is_ok(),
                || format!("{second:?}"),
            );
            // The values and moving statistics of the fused op.
            let fused_g = Graph::with_seed(5);
            let fx = fused_g.placeholder(x.shape());
            let (fs, fo) = (fused_g.placeholder([c]), fused_g.placeholder([c]));
            let fmm = fused_g.variable(&[c], Zeros, false)?;
            let fmv = fused_g.variable(&[c], Ones, false)?;
            let fy = ad::fused_batch_norm(&fx, &fs, &fo, &fmm, &fmv, config)?;
            let ffeed = Feed::new()
                .with(&fx, feed.get(&x).unwrap().clone())?
                .with(&fs, feed.get(&scale).unwrap().clone())?
                .with(&fo, feed.get(&offset).unwrap().clone())?;
            g.set_variable_value(&mm, Tensor::zeros(vec![c]))?;
            g.set_variable_value(&mv, Tensor::ones(vec![c]))?;
            let a = ad::RunTime::new().forward(&y, &feed)?.clone();
            let b = ad::RunTime::new().forward(&fy, &ffeed)?.clone();
            let diff = a
                .iter()
                .zip(&b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            let stats_diff = [(&mm, &fmm), (&mv, &fmv)]
                .iter()
                .map(|(s, f)| {
                    let (s, f) = (
                        g.variable_value(s).unwrap(),
                        fused_g.variable_value(f).unwrap(),
                    );
                    s.iter()
                        .zip(&f)
                        .map(|(p, q)| (p - q).abs())
                        .fold(0.0f32, f32::max)
                })
                .fold(0.0f32, f32::max);
            out.check(
                &format!("sync_batch_norm {shape:?} = fused_batch_norm"),
                diff < 1e-4 && stats_diff < 1e-5,
                || format!("max difference {diff:e}, moving statistics {stats_diff:e}"),
            );
        }
    }
    Ok(())
}

/// A model: its graph, input and label placeholders, and loss.
struct Model {
    graph: Graph,
    x: Node,
    y: Node,
    loss: Node,
}

/// 784 → 64 relu → 10, softmax cross-entropy.
fn mlp() -> ad::Result<Model> {
    let graph = Graph::with_seed(3);
    let x = graph.placeholder(ad::shape![None, 784]);
    let y = graph.placeholder(ad::shape![None, 10]);
    let w1 = graph.variable(&[784, 64], TruncatedNormal::new(0.0, 0.05), true)?;
    let b1 = graph.variable(&[64], Zeros, true)?;
    let w2 = graph.variable(&[64, 10], TruncatedNormal::new(0.0, 0.05), true)?;
    let b2 = graph.variable(&[10], Zeros, true)?;
    let h = ad::relu(&(ad::matmul(&x, &w1)? + &b1).check()?)?;
    let logits = (ad::matmul(&h, &w2)? + &b2).check()?;
    let loss = ad::reduce_mean(
        &ad::softmax_cross_entropy_loss(&y, &logits)?,
        ad::Axes::All,
        false,
    )?;
    Ok(Model { graph, x, y, loss })
}

/// Two 3×3 stride-2 convolutions (8, 16 channels), each with batch norm
/// (synchronised across the ranks of `sync`, else fused) and relu, a mean
/// over height and width, a dense layer to 10.
fn conv_net(sync: Option<&Distributed>) -> ad::Result<Model> {
    let graph = Graph::with_seed(4);
    let x = graph.placeholder(ad::shape![None, 28, 28, 1]);
    let y = graph.placeholder(ad::shape![None, 10]);
    let mut h = x.clone();
    let mut cin = 1;
    for cout in [8, 16] {
        let k = graph.variable(&[3, 3, cin, cout], TruncatedNormal::new(0.0, 0.2), true)?;
        let scale = graph.variable(&[cout], Ones, true)?;
        let offset = graph.variable(&[cout], Zeros, true)?;
        let mm = graph.variable(&[cout], Zeros, false)?;
        let mv = graph.variable(&[cout], Ones, false)?;
        let conv = ad::conv2d(&h, &k, [2, 2], ad::Padding::Same)?;
        let config = BatchNormConfig {
            decay: 0.9,
            activation: ad::BatchNormActivation::Relu,
            ..Default::default()
        };
        h = match sync {
            Some(d) => sync_batch_norm(&conv, &scale, &offset, &mm, &mv, config, d)?,
            None => ad::fused_batch_norm(&conv, &scale, &offset, &mm, &mv, config)?,
        };
        cin = cout;
    }
    let pooled = ad::reduce_mean(&h, [1, 2], false)?;
    let w = graph.variable(&[cin, 10], TruncatedNormal::new(0.0, 0.1), true)?;
    let b = graph.variable(&[10], Zeros, true)?;
    let logits = (ad::matmul(&pooled, &w)? + &b).check()?;
    let loss = ad::reduce_mean(
        &ad::softmax_cross_entropy_loss(&y, &logits)?,
        ad::Axes::All,
        false,
    )?;
    Ok(Model { graph, x, y, loss })
}

/// Trains `m` for 50 steps of Adam on global batches of 50 (distributed
/// over `dist`'s ranks, or on this process alone); the final loss and every
/// variable's value.
fn train(
    m: &Model,
    data: (&Tensor, &Tensor),
    dist: Option<&Distributed>,
) -> ad::Result<(f32, Vec<Tensor>)> {
    let batches = Batches::new(data.0.clone(), data.1.clone(), 50, 11)?;
    let mut trainer = Trainer::new(&m.graph)
        .optimizer(Adam::new(3e-3))
        .data(batches)
        .steps(50)
        .progress(false);
    if let Some(d) = dist {
        trainer = trainer.distributed(d);
    }
    let summary = trainer.run(|s| {
        let (xb, yb) = s.next_batch()?;
        s.minimize(&m.loss, &Feed::new().with(&m.x, xb)?.with(&m.y, yb)?)
    })?;
    let values = m
        .graph
        .variables(false)
        .iter()
        .map(|v| m.graph.variable_value(v))
        .collect::<ad::Result<_>>()?;
    Ok((summary.final_loss().unwrap_or(f32::NAN), values))
}

/// An optimizer's state: named tensors.
type State = Vec<(String, Tensor)>;

/// How [`train_run`] trains.
#[derive(Clone, Copy)]
enum Mode<'a> {
    /// One process, batch 50.
    Single,
    /// `Trainer::distributed`, with the sharded update.
    Sharded(&'a Distributed),
    /// Each rank its rows by hand, `AveragedOptimizer` (the whole gradient
    /// averaged on every rank).
    Averaged(&'a Distributed),
}

/// Trains `m` with Adam on global batches of 50 until step `steps`, resuming
/// from `resume` and saving to `save` when given; the final loss, every
/// variable's value, and the optimizer's state (gathered from the ranks: all
/// of them call this).
fn train_run(
    m: &Model,
    data: (&Tensor, &Tensor),
    mode: Mode<'_>,
    steps: usize,
    resume: Option<&Path>,
    save: Option<&Path>,
) -> ad::Result<(f32, Vec<Tensor>, State)> {
    let batches = Batches::new(data.0.clone(), data.1.clone(), 50, 11)?;
    let mut trainer = Trainer::new(&m.graph)
        .data(batches)
        .steps(steps)
        .progress(false);
    trainer = match mode {
        Mode::Single => trainer.optimizer(Adam::new(3e-3)),
        Mode::Sharded(d) => {
            d.set_shard_optimizer(true);
            let t = trainer.optimizer(Adam::new(3e-3)).distributed(d);
            d.set_shard_optimizer(false);
            t
        }
        Mode::Averaged(d) => trainer.optimizer(AveragedOptimizer::new(Adam::new(3e-3), d)),
    };
    if let Some(path) = save {
        trainer = trainer.checkpoint(path, None);
    }
    if let Some(path) = resume {
        trainer.resume(path)?;
    }
    let summary = trainer.run(|s| {
        let (xb, yb) = s.next_batch()?;
        let (xb, yb) = match mode {
            Mode::Averaged(d) => d.shard(xb, yb)?,
            _ => (xb, yb),
        };
        s.minimize(&m.loss, &Feed::new().with(&m.x, xb)?.with(&m.y, yb)?)
    })?;
    let values = m
        .graph
        .variables(false)
        .iter()
        .map(|v| m.graph.variable_value(v))
        .collect::<ad::Result<_>>()?;
    let state = trainer.optimizers()[0].state();
    Ok((summary.final_loss().unwrap_or(f32::NAN), values, state))
}

fn bits(v: &[Tensor]) -> Vec<u32> {
    v.iter()
        .flat_map(|t| t.iter().map(|x| x.to_bits()))
        .collect()
}

/// The largest difference between two optimizer states, relative to each
/// entry's largest magnitude; infinite when their entries differ.
fn state_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let names = |s: &[(String, Tensor)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        return f64::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|((_, p), (_, q))| {
            let scale = q.iter().fold(0f32, |m, &x| m.max(x.abs())).max(1e-12);
            p.iter()
                .zip(q.iter())
                .map(|(&x, &y)| f64::from((x - y).abs() / scale))
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max)
}

fn sharded(d: &Distributed, out: &mut Outcome) -> ad::Result<()> {
    let data = ad::data::Mnist::embedded()?;
    let labels = ad::data::one_hot(&data.train_labels, 10)?;
    let flat = data.train_images.flat();
    let data = (&flat, &labels);

    // Sharded against averaged, in buckets of 1001 elements (1000 on 2
    // ranks: 51 buckets for the MLP's 50,890, the last one padded, blocks
    // cutting through the variables).
    d.set_bucket_bytes(4 * 1001);
    let sharded = train_run(&mlp()?, data, Mode::Sharded(d), 20, None, None);
    let averaged = train_run(&mlp()?, data, Mode::Averaged(d), 20, None, None);
    d.set_bucket_bytes(DEFAULT_BUCKET_BYTES);
    let ((_, sharded_vars, sharded_state), (_, averaged_vars, averaged_state)) =
        (sharded?, averaged?);
    // Two ranks sum each element in one addition either way; more may
    // order the sums differently in the two collectives.
    let exact = d.size() <= 2;
    out.check(
        "sharded update = averaged update (same bits on up to 2 ranks), small buckets",
        if exact {
            bits(&sharded_vars) == bits(&averaged_vars)
        } else {
            max_rel_diff(&sharded_vars, &averaged_vars) <= 1e-5
        },
        || {
            format!(
                "variables differ by {:.2e}",
                max_rel_diff(&sharded_vars, &averaged_vars)
            )
        },
    );
    let diff = state_diff(&sharded_state, &averaged_state);
    out.check(
        "sharded state gathered = averaged optimizer's state",
        if exact { diff == 0.0 } else { diff <= 1e-5 },
        || format!("differ by {diff:e}"),
    );

    // A checkpoint at step 25 (rank 0 writes where its pid says; every rank
    // learns the name), resumed to step 50 on N ranks and on one process.
    let mut name = format!("adgraph-sharded-{}.safetensors", std::process::id()).into_bytes();
    d.broadcast_bytes(&mut name);
    let path = std::env::temp_dir().join(String::from_utf8_lossy(&name).to_string());
    let (_, _, single_state) = train_run(&mlp()?, data, Mode::Single, 25, None, None)?;
    let (_, _, dist_state) = train_run(&mlp()?, data, Mode::Sharded(d), 25, None, Some(&path))?;
    let diff = state_diff(&dist_state, &single_state);
    println!(
        "rank {}: Adam state after 25 steps, gathered from {} ranks vs one process: {diff:.2e}",
        d.rank(),
        d.size()
    );
    out.check(
        "sharded Adam state = one process's (rel 1e-4 of each entry's largest value)",
        diff <= 1e-4,
        || format!("differ by {diff:e}"),
    );
    let (whole_loss, whole_vars, _) = train_run(&mlp()?, data, Mode::Sharded(d), 50, None, None)?;
    let (resumed_loss, resumed_vars, _) =
        train_run(&mlp()?, data, Mode::Sharded(d), 50, Some(&path), None)?;
    out.check(
        "sharded: resumed at step 25 on N ranks = uninterrupted (same bits)",
        resumed_loss.to_bits() == whole_loss.to_bits() && bits(&resumed_vars) == bits(&whole_vars),
        || format!("{resumed_loss} vs {whole_loss}"),
    );
    // The file is rank 0's: the others read it after the resume above
    // (which rank 0 took part in, after writing it).
    let (single_loss, _, _) = train_run(&mlp()?, data, Mode::Single, 50, Some(&path), None)?;
    let r = rel(f64::from(single_loss), f64::from(whole_loss));
    out.check(
        "sharded checkpoint resumed on one process = N ranks (rel 1e-4)",
        r <= 1e-4,
        || format!("{single_loss} vs {whole_loss}: {r:e}"),
    );
    d.barrier();
    if d.is_primary() {
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}

fn max_rel_diff(a: &[Tensor], b: &[Tensor]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(p, q)| p.iter().zip(q.iter()))
        .map(|(&p, &q)| f64::from((p - q).abs()) / f64::from(q.abs()).max(1e-2))
        .fold(0.0, f64::max)
}

fn same_answer(d: &Distributed, out: &mut Outcome) -> ad::Result<()> {
    let data = ad::data::Mnist::embedded()?;
    let labels = ad::data::one_hot(&data.train_labels, 10)?;
    let flat = data.train_images.flat();
    let images = data.train_images.nhwc();

    // Without batch norm.
    let (single_loss, single_vars) = train(&mlp()?, (&flat, &labels), None)?;
    let (dist_loss, dist_vars) = train(&mlp()?, (&flat, &labels), Some(d))?;
    let (again_loss, again_vars) = train(&mlp()?, (&flat, &labels), Some(d))?;
    let r = rel(f64::from(dist_loss), f64::from(single_loss));
    println!(
        "rank {}: MLP, 50 steps: 1 process × batch 50 final_loss={single_loss:.7}, {} ranks × batch {} \
         final_loss={dist_loss:.7}, relative difference {r:.2e}, variables {:.2e}",
        d.rank(),
        d.size(),
        50 / d.size(),
        max_rel_diff(&dist_vars, &single_vars)
    );
    out.check(
        "MLP: distributed final loss = one process's (rel 1e-4)",
        r <= 1e-4,
        || format!("{dist_loss} vs {single_loss}: {r:e}"),
    );
    let bits = |v: &[Tensor]| {
        v.iter()
            .flat_map(|t| t.iter().map(|x| x.to_bits()))
            .collect::<Vec<u32>>()
    };
    out.check(
        "MLP: a second distributed run gives the same bits",
        again_loss.to_bits() == dist_loss.to_bits() && bits(&again_vars) == bits(&dist_vars),
        || format!("{again_loss} vs {dist_loss}"),
    );

    // The conv net: synchronised batch norm against one process's fused one.
    let (single_loss, single_vars) = train(&conv_net(None)?, (&images, &labels), None)?;
    let (sync_loss, sync_vars) = train(&conv_net(Some(d))?, (&images, &labels), Some(d))?;
    let (again_loss, again_vars) = train(&conv_net(Some(d))?, (&images, &labels), Some(d))?;
    let r = rel(f64::from(sync_loss), f64::from(single_loss));
    println!(
        "rank {}: conv net, 50 steps: 1 process × batch 50 (fused batch norm) final_loss={single_loss:.7}, \
         {} ranks × batch {} (synchronised batch norm) final_loss={sync_loss:.7}, relative difference {r:.2e}, \
         variables {:.2e}",
        d.rank(),
        d.size(),
        50 / d.size(),
        max_rel_diff(&sync_vars, &single_vars)
    );
    out.check(
        "conv net: synchronised batch norm final loss = one process's (rel 1e-4)",
        r <= 1e-4,
        || format!("{sync_loss} vs {single_loss}: {r:e}"),
    );
    out.check(
        "conv net: a second distributed run gives the same bits",
        again_loss.to_bits() == sync_loss.to_bits() && bits(&again_vars) == bits(&sync_vars),
        || format!("{again_loss} vs {sync_loss}"),
    );

    // Balanced shares (rows split by the ranks' speeds, which change from
    // run to run): the same steps up to rounding, batch norm synchronised.
    d.set_balance(true);
    let (bal_loss, bal_vars) = train(&conv_net(Some(d))?, (&images, &labels), Some(d))?;
    d.set_balance(false);
    d.set_share(1, d.size());
    let r = rel(f64::from(bal_loss), f64::from(single_loss));
    println!(
        "rank {}: conv net, 50 steps, balanced shares, synchronised batch norm: final_loss={bal_loss:.7}, \
         relative difference {r:.2e}, variables {:.2e}",
        d.rank(),
        max_rel_diff(&bal_vars, &single_vars)
    );
    out.check(
        "conv net: balanced shares, final loss = one process's (rel 1e-4)",
        r <= 1e-4,
        || format!("{bal_loss} vs {single_loss}: {r:e}"),
    );
    Ok(())
}

/// Times the averaging of a gradient the size of the conv net demo's
/// (395,386 values, 1.58 MB): the median of 20, each after a barrier so
/// that a slower rank's compute is not counted. Printed, not asserted.
fn time_conv_net_gradients(d: &Distributed) -> ad::Result<()> {
    let grad = Tensor::from_elem(vec![395_386], 0.25);
    let mut times = Vec::new();
    for _ in 0..21 {
        d.barrier();
        let t0 = std::time::Instant::now();
        let avg = d.average_tensors(&[&grad])?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        assert_eq!(avg[0][0], 0.25);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "rank {}: averaging the conv net's gradients (1.58 MB) over {} ranks: median {:.3} ms, \
         min {:.3} ms (pack, allreduce, unpack; 21 runs)",
        d.rank(),
        d.size(),
        times[times.len() / 2],
        times[0]
    );
    Ok(())
}

/// Times one Adam update of variables shaped as the conv net demo's (five
/// kernels, batch-norm scales and offsets, the dense layer: 395,386 values),
/// averaged (`AveragedOptimizer`: pack, allreduce, unpack, the whole update on
/// every rank) against sharded (`ShardedOptimizer`: pack, reduce-scatter, the
/// update of this rank's share, allgather, unpack): the median and minimum of
/// 21, each after a barrier. Printed, not asserted.
fn time_conv_net_updates(d: &Distributed) -> ad::Result<()> {
    let graph = Graph::with_seed(5);
    let mut shapes: Vec<Vec<usize>> = Vec::new();
    let mut cin = 1;
    for cout in [16, 32, 64, 128, 256] {
        shapes.extend([vec![3, 3, cin, cout], vec![cout], vec![cout]]);
        cin = cout;
    }
    shapes.extend([vec![256, 10], vec![10]]);
    let pairs: Vec<(Node, Tensor)> = shapes
        .iter()
        .map(|s| {
            let v = graph.variable(s, TruncatedNormal::new(0.0, 0.01), true)?;
            Ok((v, Tensor::from_elem(s.clone(), 1e-3)))
        })
        .collect::<ad::Result<_>>()?;
    let mut averaged = AveragedOptimizer::new(Adam::new(1e-3), d);
    let mut sharded = ShardedOptimizer::new(Adam::new(1e-3), d)?;
    let mut line = Vec::new();
    for (name, opt) in [
        ("averaged", &mut averaged as &mut dyn ad::optim::Optimizer),
        ("sharded", &mut sharded),
    ] {
        let mut times = Vec::new();
        for _ in 0..21 {
            d.barrier();
            let t0 = std::time::Instant::now();
            opt.apply_gradients(&pairs)?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        line.push(format!(
            "{name} median {:.3} ms, min {:.3} ms",
            times[times.len() / 2],
            times[0]
        ));
    }
    // The collectives alone, on buffers of that size.
    let n = d.size();
    let block = 395_386usize.div_ceil(n);
    let send = vec![0.5f32; block * n];
    let mut part = vec![0f32; block];
    let mut whole = vec![0f32; block * n];
    let (mut rs, mut ag, mut ar) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..21 {
        d.barrier();
        let t0 = std::time::Instant::now();
        d.reduce_scatter_sum(&send, &mut part)?;
        rs.push(t0.elapsed().as_secs_f64() * 1e3);
        d.barrier();
        let t0 = std::time::Instant::now();
        d.all_gather(&part, &mut whole)?;
        ag.push(t0.elapsed().as_secs_f64() * 1e3);
        whole.copy_from_slice(&send);
        d.barrier();
        let t0 = std::time::Instant::now();
        d.all_reduce_sum(&mut whole);
        ar.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    for (name, t) in [
        ("reduce-scatter", &mut rs),
        ("allgather", &mut ag),
        ("allreduce", &mut ar),
    ] {
        t.sort_by(f64::total_cmp);
        line.push(format!(
            "{name} alone median {:.3} ms, min {:.3} ms",
            t[t.len() / 2],
            t[0]
        ));
    }
    println!(
        "rank {}: an Adam update of the conv net's variables (395,386 values) on {} ranks: {} (21 runs)",
        d.rank(),
        d.size(),
        line.join("; ")
    );
    Ok(())
}

#[test]
fn distributed() {
    let d = Distributed::init().expect("MPI starts");
    let mut out = Outcome::default();
    for (name, part) in [
        (
            "collectives",
            collectives as fn(&Distributed, &mut Outcome) -> ad::Result<()>,
        ),
        ("cross-replica ops", cross_replica),
        ("same answer", same_answer),
        ("sharded update", sharded),
        ("timing", |d: &Distributed, _: &mut Outcome| {
            time_conv_net_gradients(d)?;
            time_conv_net_updates(d)
        }),
    ] {
        if let Err(e) = part(&d, &mut out) {
            out.failed.push(format!("{name}: error: {e}"));
        }
    }
    println!(
        "distributed (rank {} of {}): {} passed, {} failed",
        d.rank(),
        d.size(),
        out.passed,
        out.failed.len()
    );
    assert!(
        out.failed.is_empty(),
        "failed checks:\n{}",
        out.failed.join("\n")
    );
}
