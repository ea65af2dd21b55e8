//! Writes the Fashion-MNIST slice shipped in `data/fashion-mnist/`: the first
//! 10,000 training and the first 2,000 test images and labels, as IDX files
//! gzipped at the best level, with the standard names.
//!
//! ```text
//! cargo run --release --example make_data_slice -- \
//!     [--src /usr/share/datasets/fashion-mnist] [--out data/fashion-mnist] \
//!     [--train 10000] [--test 2000]
//! ```
//!
//! The source is any folder with the four standard MNIST-style files (Debian's
//! `dataset-fashion-mnist` package installs them in the default `--src`). The
//! output is byte-for-byte reproducible. The licence and README beside the
//! shipped files are not written by this program.

use std::path::{Path, PathBuf};

use adgraph::data::{read_idx, write_idx};

fn usage() -> ! {
    eprintln!("usage: make_data_slice [--src DIR] [--out DIR] [--train N] [--test N]");
    std::process::exit(2)
}

/// The source file `stem` or `stem.gz` of `dir`.
fn source(dir: &Path, stem: &str) -> PathBuf {
    let plain = dir.join(stem);
    if plain.is_file() {
        plain
    } else {
        dir.join(format!("{stem}.gz"))
    }
}

fn main() -> adgraph::Result<()> {
    let mut src = PathBuf::from("/usr/share/datasets/fashion-mnist");
    let mut out = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
    let (mut train, mut test) = (10_000usize, 2_000usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--src" => src = value.into(),
            "--out" => out = value.into(),
            "--train" => train = value.parse().unwrap_or_else(|_| usage()),
            "--test" => test = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    std::fs::create_dir_all(&out).map_err(|e| adgraph::Error::Io {
        path: out.display().to_string(),
        message: e.to_string(),
    })?;
    for (stem, n) in [
        ("train-images-idx3-ubyte", train),
        ("train-labels-idx1-ubyte", train),
        ("t10k-images-idx3-ubyte", test),
        ("t10k-labels-idx1-ubyte", test),
    ] {
        let from = source(&src, stem);
        let to = out.join(format!("{stem}.gz"));
        let slice = read_idx(&from)?.head(n)?;
        write_idx(&to, &slice)?;
        let size = std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
        println!(
            "{} -> {}: dims {:?}, {size} bytes",
            from.display(),
            to.display(),
            slice.dims()
        );
    }
    Ok(())
}
