//! adgraph::data: the IDX reader and writer (valid, truncated, trailing, wrong
//! magic/type/rank, absurd headers), Mnist::load, one_hot, take_rows, the
//! spiral set and its split, the mini-batch iterator, and the shipped
//! Fashion-MNIST slice.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod alloc_meter;
use alloc_meter::largest_allocation;

use adgraph::data::{
    default_data_dir, one_hot, read_idx, read_idx_bytes, read_idx_images, read_idx_labels, spiral,
    take_rows, train_test_split, write_idx, Batches, IdxData, Mnist, Position, Spiral,
};
use adgraph::{Error, Tensor};
use flate2::{write::GzEncoder, Compression};
use ndarray::IxDyn;

// ------------------------------------------------------------ helpers

/// A fresh, empty folder under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "adgraph-data-{}-{}-{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An IDX header written by hand: magic `00 00 ty rank`, then the dims.
fn header(ty: u8, dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, ty, dims.len() as u8];
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Pseudo-random bytes (a small LCG, enough for test data).
fn bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 24) as u8
        })
        .collect()
}

fn image_file(n: u32, rows: u32, cols: u32, seed: u32) -> (Vec<u8>, Vec<u8>) {
    let pixels = bytes((n * rows * cols) as usize, seed);
    let mut f = header(0x08, &[n, rows, cols]);
    f.extend_from_slice(&pixels);
    (f, pixels)
}

fn label_file(labels: &[u8]) -> Vec<u8> {
    let mut f = header(0x08, &[labels.len() as u32]);
    f.extend_from_slice(labels);
    f
}

/// The data error's message, asserting the error is a data error naming `path`.
fn data_error(r: Result<impl std::fmt::Debug, Error>, path: &Path) -> String {
    match r {
        Err(Error::Data { path: p, message }) => {
            assert_eq!(p, path.display().to_string());
            message
        }
        other => panic!("expected Error::Data for {}, got {other:?}", path.display()),
    }
}

// ------------------------------------------------------------ IDX: valid files

#[test]
fn reads_images_plain_and_gzipped_by_content_not_name() {
    let dir = temp_dir("valid");
    let (file, pixels) = image_file(3, 4, 5, 1);
    // Names deliberately lie: the gzipped one has no .gz, the plain one has.
    let plain = write_file(&dir, "plain.gz", &file);
    let gz = write_file(&dir, "packed", &gzip(&file));
    for p in [&plain, &gz] {
        let set = read_idx_images(p).unwrap();
        assert_eq!(set.images().shape(), &[3, 4, 5]);
        assert_eq!((set.len(), set.rows(), set.cols()), (3, 4, 5));
        let want: Vec<f32> = pixels.iter().map(|&b| f32::from(b) / 255.0).collect();
        assert_eq!(set.images().iter().copied().collect::<Vec<_>>(), want);
        assert!(set.images().iter().all(|&v| (0.0..=1.0).contains(&v)));
        let nhwc = set.nhwc();
        assert_eq!(nhwc.shape(), &[3, 4, 5, 1]);
        assert_eq!(nhwc[[2, 3, 4, 0]], set.images()[[2, 3, 4]]);
        let flat = set.flat();
        assert_eq!(flat.shape(), &[3, 20]);
        assert_eq!(flat[[1, 7]], set.images()[[1, 1, 2]]);
        assert_eq!(set.clone().into_tensor(), *set.images());
    }
}

#[test]
fn reads_labels_plain_and_gzipped() {
    let dir = temp_dir("labels");
    let labels = vec![3u8, 1, 4, 1, 5, 9, 2, 6];
    let file = label_file(&labels);
    let plain = write_file(&dir, "l", &file);
    let gz = write_file(&dir, "l.gz", &gzip(&file));
    assert_eq!(read_idx_labels(&plain).unwrap(), labels);
    assert_eq!(read_idx_labels(&gz).unwrap(), labels);
    // Empty label file: valid.
    let empty = write_file(&dir, "e", &label_file(&[]));
    assert!(read_idx_labels(&empty).unwrap().is_empty());
}

#[test]
fn read_idx_bytes_reads_what_the_file_reader_reads() {
    let dir = temp_dir("bytes");
    let (images, pixels) = image_file(2, 3, 4, 9);
    let labels = label_file(&[4, 0, 2]);
    for (name, file, rank) in [
        ("i", images.clone(), 3),
        ("i.gz", gzip(&images), 3),
        ("l", labels.clone(), 1),
        ("l.gz", gzip(&labels), 1),
    ] {
        let p = write_file(&dir, name, &file);
        let from_file = read_idx(&p).unwrap();
        assert_eq!(read_idx_bytes(&file, None).unwrap(), from_file, "{name}");
        assert_eq!(
            read_idx_bytes(&file, Some(rank)).unwrap(),
            from_file,
            "{name}"
        );
        assert!(read_idx_bytes(&file, Some(4 - rank)).is_err(), "{name}");
    }
    assert_eq!(
        read_idx_bytes(&images, Some(3)).unwrap().data(),
        &pixels[..]
    );
    assert_eq!(read_idx_bytes(&labels, Some(1)).unwrap().dims(), &[3]);
}

#[test]
fn write_idx_round_trips_and_gzips_by_name() {
    let dir = temp_dir("write");
    let data = IdxData::new(vec![4, 3, 2], bytes(24, 7)).unwrap();
    let plain = dir.join("x-idx3-ubyte");
    let gz = dir.join("x-idx3-ubyte.gz");
    write_idx(&plain, &data).unwrap();
    write_idx(&gz, &data).unwrap();
    assert_eq!(std::fs::read(&plain).unwrap()[..4], [0, 0, 8, 3]);
    assert_eq!(std::fs::read(&gz).unwrap()[..2], [0x1f, 0x8b]);
    assert_eq!(read_idx(&plain).unwrap(), data);
    assert_eq!(read_idx(&gz).unwrap(), data);
    // Deterministic bytes.
    let gz2 = dir.join("again.gz");
    write_idx(&gz2, &data).unwrap();
    assert_eq!(std::fs::read(&gz).unwrap(), std::fs::read(&gz2).unwrap());
    // head
    let h = data.head(2).unwrap();
    assert_eq!(h.dims(), &[2, 3, 2]);
    assert_eq!(h.data(), &data.data()[..12]);
    assert!(data.head(5).is_err());
    // IdxData::new validation.
    assert!(IdxData::new(vec![], vec![]).is_err());
    assert!(IdxData::new(vec![2, 2], vec![0; 3]).is_err());
    assert!(IdxData::new(vec![usize::MAX, 2], vec![]).is_err());
    // Writing into a missing folder is an Io error naming the file.
    let missing = dir.join("no/such/dir/f.gz");
    match write_idx(&missing, &data) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing.display().to_string()),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------ IDX: bad files

#[test]
fn truncated_files_are_refused() {
    let dir = temp_dir("trunc");
    let (file, _) = image_file(2, 3, 3, 2);
    let short = &file[..file.len() - 1];
    let p = write_file(&dir, "short", short);
    let m = data_error(read_idx_images(&p), &p);
    assert!(m.contains("truncated"), "{m}");
    let p = write_file(&dir, "short.gz", &gzip(short));
    let m = data_error(read_idx_images(&p), &p);
    assert!(m.contains("truncated"), "{m}");
    // Inside the header, plain and gzipped, and an empty file.
    for (name, bytes) in [
        ("hdr", file[..10].to_vec()),
        ("hdr.gz", gzip(&file[..10])),
        ("magic", file[..3].to_vec()),
        ("empty", Vec::new()),
    ] {
        let p = write_file(&dir, name, &bytes);
        let m = data_error(read_idx_images(&p), &p);
        assert!(m.contains("header"), "{name}: {m}");
    }
    // A gzip stream cut short is refused too (as corrupt or truncated).
    let gz = gzip(&file);
    for cut in [12, 4] {
        // 12: into the deflate data; 4: only the trailer (data complete, CRC
        // and length missing).
        let p = write_file(&dir, "cut.gz", &gz[..gz.len() - cut]);
        let m = data_error(read_idx_images(&p), &p);
        assert!(m.contains("gzip"), "{m}");
    }
    // A flipped bit inside the deflate data: corrupt stream or CRC mismatch.
    let mut bad = gz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x10;
    let p = write_file(&dir, "flipped.gz", &bad);
    assert!(matches!(read_idx_images(&p), Err(Error::Data { .. })));
}

#[test]
fn trailing_bytes_are_refused() {
    let dir = temp_dir("trail");
    let mut file = label_file(&[1, 2, 3]);
    file.extend_from_slice(&[7, 7]);
    let p = write_file(&dir, "t", &file);
    let m = data_error(read_idx_labels(&p), &p);
    assert!(m.contains("2 trailing bytes"), "{m}");
    let p = write_file(&dir, "t.gz", &gzip(&file));
    let m = data_error(read_idx_labels(&p), &p);
    assert!(m.contains("2 trailing bytes"), "{m}");
}

#[test]
fn wrong_magic_type_and_rank_are_refused() {
    let dir = temp_dir("magic");
    // Not IDX at all.
    let p = write_file(&dir, "text", b"hello, this is not an IDX file");
    let m = data_error(read_idx_labels(&p), &p);
    assert!(
        m.contains("not an IDX file") && m.contains("0x00000801"),
        "{m}"
    );
    // IDX of 32-bit floats.
    let mut f = header(0x0D, &[1, 2, 2]);
    f.extend_from_slice(&[0; 16]);
    let p = write_file(&dir, "f32", &f);
    let m = data_error(read_idx_images(&p), &p);
    assert!(m.contains("0x0d") && m.contains("32-bit float"), "{m}");
    let p = write_file(&dir, "f32.gz", &gzip(&f));
    assert!(data_error(read_idx(&p), &p).contains("unsupported"));
    // A label file read as images and vice versa.
    let labels = write_file(&dir, "labels", &label_file(&[1, 2]));
    let m = data_error(read_idx_images(&labels), &labels);
    assert!(m.contains("rank 1") && m.contains("0x00000803"), "{m}");
    let (img, _) = image_file(1, 2, 2, 3);
    let images = write_file(&dir, "images.gz", &gzip(&img));
    let m = data_error(read_idx_labels(&images), &images);
    assert!(m.contains("rank 3") && m.contains("0x00000801"), "{m}");
    // Rank 2 u8 (0x00000802) is neither, but read_idx takes it.
    let mut f = header(0x08, &[2, 3]);
    f.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
    let p = write_file(&dir, "r2", &f);
    assert!(read_idx_images(&p).is_err() && read_idx_labels(&p).is_err());
    assert_eq!(read_idx(&p).unwrap().dims(), &[2, 3]);
    // Rank 0.
    let p = write_file(&dir, "r0", &header(0x08, &[]));
    assert!(data_error(read_idx(&p), &p).contains("rank 0"));
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let p = temp_dir("missing").join("nope-idx1-ubyte");
    match read_idx_labels(&p) {
        Err(Error::Io { path, .. }) => assert_eq!(path, p.display().to_string()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn absurd_headers_are_refused_quickly_without_allocating() {
    let dir = temp_dir("absurd");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // 20-byte file claiming 2^31 images of 28x28 (above the element cap).
        ("huge", {
            let mut f = header(0x08, &[1 << 31, 28, 28]);
            f.extend_from_slice(&[0; 4]);
            f
        }),
        ("huge.gz", {
            let mut f = header(0x08, &[1 << 31, 28, 28]);
            f.extend_from_slice(&[0; 4]);
            gzip(&f)
        }),
        // All dims at u32::MAX: the product overflows 64 bits.
        ("overflow", header(0x08, &[u32::MAX; 3])),
        // Under the cap (about 2^31 bytes) but far more than the file holds.
        ("big", header(0x08, &[(1 << 31) - 1])),
        // Gzipped: more than a tiny gzip file could ever decompress to.
        ("big.gz", gzip(&header(0x08, &[1 << 30]))),
    ];
    for (name, bytes) in cases {
        let p = write_file(&dir, name, &bytes);
        let start = Instant::now();
        let (r, largest) = largest_allocation(|| read_idx(&p));
        let m = data_error(r, &p);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{name} took {:?}",
            start.elapsed()
        );
        assert!(largest < 1 << 20, "{name}: allocated {largest} bytes ({m})");
    }
}

#[test]
fn gzip_reader_allocates_no_more_than_the_data_really_holds() {
    // A header claiming 1,000,000 bytes, followed by only 2,010: 10 zeros, then
    // 2,000 incompressible bytes in a second gzip member (which makes the file
    // big enough, ~2 KB * 1032, to pass the compression-ratio check). The
    // reader must find it truncated without having reserved the claimed
    // megabyte up front.
    let dir = temp_dir("bounded");
    let mut f = header(0x08, &[1_000_000]);
    f.extend_from_slice(&[0; 10]);
    let mut padded = gzip(&f);
    padded.extend_from_slice(&gzip(&bytes(2_000, 5)));
    let p = write_file(&dir, "claims-more.gz", &padded);
    let (r, largest) = largest_allocation(|| read_idx(&p));
    let m = data_error(r, &p);
    assert!(m.contains("truncated"), "{m}");
    assert!(largest < 500_000, "allocated {largest} bytes up front");
}

// ------------------------------------------------------------ IDX: hostile files, one test per class
//
// Each class is read through the file reader of its rank and through
// `read_idx_bytes`, plain and gzipped where both make sense. Each must give
// `Error::Data` with a message naming the problem, quickly, and without any
// allocation near what the header claims.

/// Which reader a hostile file is fed to.
#[derive(Clone, Copy)]
enum Reader {
    Any,
    Labels,
    Images,
}

/// Asserts `bytes` is refused by the file reader and by `read_idx_bytes` with
/// an `Error::Data` containing `needle`, in under 2 s, with no allocation of
/// `max_alloc` bytes or more. Returns the file reader's message.
fn refused(name: &str, bytes: &[u8], reader: Reader, needle: &str, max_alloc: usize) -> String {
    let dir = temp_dir("hostile");
    let p = write_file(&dir, name, bytes);
    let start = Instant::now();
    let (from_file, a1) = largest_allocation(|| match reader {
        Reader::Any => read_idx(&p).map(|_| ()),
        Reader::Labels => read_idx_labels(&p).map(|_| ()),
        Reader::Images => read_idx_images(&p).map(|_| ()),
    });
    let rank = match reader {
        Reader::Any => None,
        Reader::Labels => Some(1),
        Reader::Images => Some(3),
    };
    let (from_mem, a2) = largest_allocation(|| read_idx_bytes(bytes, rank));
    let elapsed = start.elapsed();
    let m = data_error(from_file, &p);
    let m2 = data_error(from_mem, Path::new("(in memory)"));
    for msg in [&m, &m2] {
        assert!(msg.contains(needle), "{name}: {needle:?} not in {msg:?}");
    }
    assert!(elapsed < Duration::from_secs(2), "{name} took {elapsed:?}");
    assert!(
        a1.max(a2) < max_alloc,
        "{name}: allocated {} bytes ({m})",
        a1.max(a2)
    );
    // What the user sees (`cargo test --test data hostile -- --nocapture`).
    eprintln!("{name}: {m} [largest allocation {} bytes]", a1.max(a2));
    m
}

const MIB: usize = 1 << 20;

#[test]
fn hostile_idx_truncated_data() {
    let (file, _) = image_file(2, 3, 3, 2);
    let short = &file[..file.len() - 1];
    refused("short", short, Reader::Images, "truncated", MIB);
    refused("short.gz", &gzip(short), Reader::Images, "truncated", MIB);
}

#[test]
fn hostile_idx_truncated_header() {
    let (file, _) = image_file(2, 3, 3, 2);
    for (name, bytes) in [
        ("dims", file[..10].to_vec()),
        ("dims.gz", gzip(&file[..10])),
        ("magic", file[..3].to_vec()),
        ("empty", Vec::new()),
        ("empty.gz", gzip(&[])),
    ] {
        refused(name, &bytes, Reader::Images, "truncated IDX header", MIB);
    }
}

#[test]
fn hostile_idx_oversized_file_with_trailing_bytes() {
    let mut file = label_file(&[1, 2, 3]);
    file.extend_from_slice(&[7; 5]);
    refused("trail", &file, Reader::Labels, "5 trailing bytes", MIB);
    refused(
        "trail.gz",
        &gzip(&file),
        Reader::Labels,
        "5 trailing bytes",
        MIB,
    );
}

#[test]
fn hostile_idx_wrong_magic() {
    let text = b"hello, this is not an IDX file";
    refused("text", text, Reader::Labels, "not an IDX file", MIB);
    refused("text.gz", &gzip(text), Reader::Any, "not an IDX file", MIB);
}

#[test]
fn hostile_idx_wrong_dtype() {
    let mut f = header(0x0D, &[1, 2, 2]);
    f.extend_from_slice(&[0; 16]);
    let needle = "unsupported IDX element type 0x0d (32-bit float)";
    refused("f32", &f, Reader::Images, needle, MIB);
    refused("f32.gz", &gzip(&f), Reader::Any, needle, MIB);
}

#[test]
fn hostile_idx_inconsistent_header() {
    // A label file read as images, an image file read as labels, rank 0.
    let labels = label_file(&[1, 2]);
    refused(
        "l",
        &labels,
        Reader::Images,
        "says rank 1, expected rank 3",
        MIB,
    );
    let (images, _) = image_file(1, 2, 2, 3);
    let m = refused(
        "i.gz",
        &gzip(&images),
        Reader::Labels,
        "says rank 3, expected rank 1",
        MIB,
    );
    assert!(m.contains("0x00000801"), "{m}");
    refused("r0", &header(0x08, &[]), Reader::Any, "rank 0", MIB);
}

#[test]
fn hostile_idx_header_claims_more_than_the_file_holds() {
    // Plain: just under the element cap, in a 16-byte file.
    refused(
        "big",
        &header(0x08, &[(1 << 31) - 1]),
        Reader::Labels,
        "but the file holds only 0",
        MIB,
    );
    // Gzipped: more than the compressed size could ever inflate to.
    refused(
        "big.gz",
        &gzip(&header(0x08, &[1 << 30])),
        Reader::Labels,
        "gzip file can hold",
        MIB,
    );
}

#[test]
fn hostile_idx_absurd_size() {
    let mut over_cap = header(0x08, &[1 << 31, 28, 28]);
    over_cap.extend_from_slice(&[0; 4]);
    let needle = "more than the 2147483648 elements this reader accepts";
    refused("cap", &over_cap, Reader::Images, needle, MIB);
    refused("cap.gz", &gzip(&over_cap), Reader::Images, needle, MIB);
    // The product of the dims overflows 64 bits.
    refused(
        "overflow",
        &header(0x08, &[u32::MAX; 3]),
        Reader::Images,
        needle,
        MIB,
    );
}

#[test]
fn hostile_idx_gzip_claiming_a_huge_size_allocates_only_what_arrives() {
    // The header claims 100 MB; the stream holds 10 bytes of data, then a
    // second gzip member of incompressible bytes makes the file large enough
    // (100 KB * 1032 > 100 MB) to pass the compression-ratio check. The
    // reader must find it truncated having allocated only about what arrived.
    let mut f = header(0x08, &[100_000_000]);
    f.extend_from_slice(&[0; 10]);
    let mut padded = gzip(&f);
    padded.extend_from_slice(&gzip(&bytes(100_000, 6)));
    let m = refused(
        "claims-100mb.gz",
        &padded,
        Reader::Labels,
        "decompressed data ends after 10",
        MIB,
    );
    assert!(m.contains("claims 100000000 data bytes"), "{m}");
}

#[test]
fn hostile_idx_gzip_bomb_behind_a_small_claim() {
    // Claims 3 bytes, but inflates to 3 + 20 MB: refused as trailing bytes
    // after inflating at most 1 MiB more, into no buffer of that size.
    let mut f = label_file(&[1, 2, 3]);
    f.resize(f.len() + 20_000_000, 0);
    let bomb = gzip(&f);
    assert!(bomb.len() < 100_000);
    refused(
        "bomb.gz",
        &bomb,
        Reader::Labels,
        "at least 1048576 trailing bytes",
        MIB,
    );
}

// ------------------------------------------------------------ Mnist::load

fn mnist_dir(tag: &str, train: (u32, u32), test: (u32, u32), gz: bool) -> PathBuf {
    let dir = temp_dir(tag);
    let name = |s: &str| if gz { format!("{s}.gz") } else { s.to_string() };
    let pack = |b: Vec<u8>| if gz { gzip(&b) } else { b };
    for (stem, (ni, nl), seed) in [("train", train, 10), ("t10k", test, 20)] {
        let (img, _) = image_file(ni, 6, 5, seed);
        write_file(
            &dir,
            &name(&format!("{stem}-images-idx3-ubyte")),
            &pack(img),
        );
        let labels: Vec<u8> = (0..nl).map(|i| (i % 10) as u8).collect();
        write_file(
            &dir,
            &name(&format!("{stem}-labels-idx1-ubyte")),
            &pack(label_file(&labels)),
        );
    }
    dir
}

#[test]
fn mnist_loads_any_folder_with_or_without_gz() {
    for gz in [false, true] {
        let dir = mnist_dir("mnist", (7, 7), (3, 3), gz);
        let m = Mnist::load(&dir).unwrap();
        assert_eq!(m.train_images.images().shape(), &[7, 6, 5]);
        assert_eq!(m.test_images.images().shape(), &[3, 6, 5]);
        assert_eq!(m.train_labels, vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(m.test_labels, vec![0, 1, 2]);
    }
}

#[test]
fn mnist_count_mismatch_missing_files_and_bad_folder() {
    let dir = mnist_dir("mismatch", (7, 6), (3, 3), true);
    let labels = dir.join("train-labels-idx1-ubyte.gz");
    let m = data_error(Mnist::load(&dir), &labels);
    assert!(m.contains("6 labels") && m.contains("7 images"), "{m}");

    let dir = mnist_dir("mismatch-test", (4, 4), (3, 2), false);
    let m = data_error(Mnist::load(&dir), &dir.join("t10k-labels-idx1-ubyte"));
    assert!(m.contains("2 labels"), "{m}");

    let dir = mnist_dir("missing", (4, 4), (3, 3), true);
    std::fs::remove_file(dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
    match Mnist::load(&dir) {
        Err(Error::Io { path, message }) => {
            assert!(path.contains("t10k-images-idx3-ubyte"), "{path}");
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Mnist::load(dir.join("not-a-folder")),
        Err(Error::Io { .. })
    ));

    // Test images of another size than the training images.
    let dir = mnist_dir("sizes", (4, 4), (3, 3), false);
    let (img, _) = image_file(3, 5, 5, 1);
    write_file(&dir, "t10k-images-idx3-ubyte", &img);
    assert!(matches!(Mnist::load(&dir), Err(Error::Data { .. })));
}

// ------------------------------------------------------------ one_hot, take_rows

#[test]
fn one_hot_encodes_and_checks_labels() {
    let labels = [0u8, 3, 1, 3];
    let y = one_hot(&labels, 4).unwrap();
    assert_eq!(y.shape(), &[4, 4]);
    for (i, &l) in labels.iter().enumerate() {
        for c in 0..4 {
            assert_eq!(y[[i, c]], if c == l as usize { 1.0 } else { 0.0 });
        }
    }
    assert_eq!(y.sum(), 4.0);
    assert!(matches!(one_hot(&[0u8, 4], 4), Err(Error::OutOfBounds(_))));
    assert!(one_hot(&[0u8], 0).is_err());
    assert_eq!(one_hot::<u8>(&[], 3).unwrap().shape(), &[0, 3]);
    assert_eq!(one_hot(&[299usize], 300).unwrap()[[0, 299]], 1.0);
}

#[test]
fn take_rows_copies_rows_in_order_and_checks_indices() {
    let x = Tensor::from_shape_fn(IxDyn(&[5, 2, 3]), |ix| {
        (ix[0] * 100 + ix[1] * 10 + ix[2]) as f32
    });
    let t = take_rows(&x, &[4, 0, 4]).unwrap();
    assert_eq!(t.shape(), &[3, 2, 3]);
    for (r, &i) in [4usize, 0, 4].iter().enumerate() {
        assert_eq!(
            t.index_axis(ndarray::Axis(0), r),
            x.index_axis(ndarray::Axis(0), i)
        );
    }
    assert!(matches!(take_rows(&x, &[5]), Err(Error::OutOfBounds(_))));
    assert!(take_rows(&Tensor::from_elem(IxDyn(&[]), 1.0), &[0]).is_err());
    // Non-standard layout (a transposed view made owned keeps its strides).
    let xt = Tensor::from_shape_fn(IxDyn(&[3, 4]), |ix| (ix[0] * 4 + ix[1]) as f32).reversed_axes();
    assert!(!xt.is_standard_layout());
    let t = take_rows(&xt, &[2, 1]).unwrap();
    assert_eq!(
        t.index_axis(ndarray::Axis(0), 0),
        xt.index_axis(ndarray::Axis(0), 2)
    );
    assert_eq!(
        t.index_axis(ndarray::Axis(0), 1),
        xt.index_axis(ndarray::Axis(0), 1)
    );
}

// ------------------------------------------------------------ spiral

#[test]
fn spiral_shapes_labels_and_determinism() {
    let (n, k) = (50, 4);
    let (x, y) = spiral(n, k, 3).unwrap();
    assert_eq!(x.shape(), &[n * k, 2]);
    assert_eq!(y.shape(), &[n * k, k]);
    for row in 0..n * k {
        let class = row / n;
        for c in 0..k {
            assert_eq!(y[[row, c]], if c == class { 1.0 } else { 0.0 });
        }
        // Radius linspace(0, 1, n) regardless of noise.
        let r = (x[[row, 0]].powi(2) + x[[row, 1]].powi(2)).sqrt();
        let want = (row % n) as f32 / (n - 1) as f32;
        assert!((r - want).abs() < 1e-5, "row {row}: radius {r} vs {want}");
    }
    assert_eq!(spiral(n, k, 3).unwrap(), (x.clone(), y.clone()));
    assert_ne!(spiral(n, k, 4).unwrap().0, x);
}

#[test]
fn spiral_without_noise_follows_the_formula() {
    let (n, k) = (20, 3);
    let (x, _) = Spiral::new(n, k)
        .with_noise(0.0)
        .with_seed(9)
        .generate()
        .unwrap();
    for class in 0..k {
        for i in 0..n {
            let r = i as f64 / (n - 1) as f64;
            let t = 4.0 * class as f64 + 4.0 * i as f64 / (n - 1) as f64;
            let row = class * n + i;
            assert!((f64::from(x[[row, 0]]) - r * t.sin()).abs() < 1e-6);
            assert!((f64::from(x[[row, 1]]) - r * t.cos()).abs() < 1e-6);
        }
    }
    // The noise really is about 0.2 in angle: mean squared angle error.
    let (xn, _) = Spiral::new(2000, 1).with_seed(1).generate().unwrap();
    let mut sq = 0.0;
    let mut count = 0;
    for i in 200..2000 {
        let r = i as f64 / 1999.0;
        let t = 4.0 * r;
        let got = f64::from(xn[[i, 0]]).atan2(f64::from(xn[[i, 1]]));
        let mut d = got - t;
        d -= (d / std::f64::consts::TAU).round() * std::f64::consts::TAU;
        sq += d * d;
        count += 1;
    }
    let sd = (sq / count as f64).sqrt();
    assert!((sd - 0.2).abs() < 0.02, "angle noise sd {sd}");
}

#[test]
fn spiral_rejects_bad_parameters() {
    assert!(spiral(0, 3, 0).is_err());
    assert!(spiral(10, 0, 0).is_err());
    assert!(Spiral::new(10, 2).with_noise(-1.0).generate().is_err());
    assert!(Spiral::new(10, 2).with_noise(f32::NAN).generate().is_err());
    let (x, _) = spiral(1, 2, 0).unwrap();
    assert_eq!(x.shape(), &[2, 2]);
}

#[test]
fn train_test_split_partitions_keeping_pairs() {
    let n = 101;
    let x = Tensor::from_shape_fn(IxDyn(&[n, 3]), |ix| (ix[0] * 3 + ix[1]) as f32);
    let y = Tensor::from_shape_fn(IxDyn(&[n, 1]), |ix| -(ix[0] as f32));
    let s = train_test_split(&x, &y, 0.25, 5).unwrap();
    assert_eq!(s.x_test.shape(), &[25, 3]);
    assert_eq!(s.x_train.shape(), &[76, 3]);
    assert_eq!(s.y_test.shape(), &[25, 1]);
    let mut seen = HashSet::new();
    for (xs, ys) in [(&s.x_train, &s.y_train), (&s.x_test, &s.y_test)] {
        for (xr, yr) in xs.outer_iter().zip(ys.outer_iter()) {
            let i = (xr[0] / 3.0) as usize;
            assert_eq!(xr[2], (i * 3 + 2) as f32);
            assert_eq!(yr[0], -(i as f32));
            assert!(seen.insert(i));
        }
    }
    assert_eq!(seen.len(), n);
    assert_eq!(train_test_split(&x, &y, 0.25, 5).unwrap(), s);
    assert_ne!(train_test_split(&x, &y, 0.25, 6).unwrap(), s);
    assert!(train_test_split(&x, &y, 1.5, 0).is_err());
    assert!(train_test_split(&x, &y, f64::NAN, 0).is_err());
    let y_short = Tensor::zeros(IxDyn(&[n - 1, 1]));
    assert!(matches!(
        train_test_split(&x, &y_short, 0.5, 0),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(
        train_test_split(&x, &y, 0.0, 0).unwrap().x_test.shape(),
        &[0, 3]
    );
    assert_eq!(
        train_test_split(&x, &y, 1.0, 0).unwrap().x_train.shape(),
        &[0, 3]
    );
}

// ------------------------------------------------------------ batches

/// `x` rows are `[i, i + 0.5]`, `y` rows `[-i]`: a batch row's example is readable.
fn numbered(n: usize) -> (Tensor, Tensor) {
    let x = Tensor::from_shape_fn(IxDyn(&[n, 2]), |ix| ix[0] as f32 + 0.5 * ix[1] as f32);
    let y = Tensor::from_shape_fn(IxDyn(&[n, 1]), |ix| -(ix[0] as f32));
    (x, y)
}

/// The example numbers of a batch, checking x and y rows belong together.
fn ids(batch: &(Tensor, Tensor)) -> Vec<usize> {
    let (x, y) = batch;
    assert_eq!(x.shape()[0], y.shape()[0]);
    x.outer_iter()
        .zip(y.outer_iter())
        .map(|(xr, yr)| {
            let i = xr[0] as usize;
            assert_eq!(xr[1], i as f32 + 0.5);
            assert_eq!(yr[0], -(i as f32));
            i
        })
        .collect()
}

#[test]
fn batches_cover_every_example_once_per_epoch() {
    let n = 23;
    let (x, y) = numbered(n);
    let mut b = Batches::new(x, y, 5, 1).unwrap();
    assert_eq!((b.len(), b.batches_per_epoch(), b.batch_size()), (n, 5, 5));
    let mut orders = Vec::new();
    for epoch in 0..3 {
        assert_eq!(b.position(), Position { epoch, batch: 0 });
        let batches: Vec<_> = b.epoch().collect();
        let sizes: Vec<usize> = batches.iter().map(|bt| bt.0.shape()[0]).collect();
        assert_eq!(sizes, [5, 5, 5, 5, 3]);
        let order: Vec<usize> = batches.iter().flat_map(ids).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..n).collect::<Vec<_>>());
        orders.push(order);
    }
    // Shuffled, and reshuffled each epoch.
    assert_ne!(orders[0], (0..n).collect::<Vec<_>>());
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
}

#[test]
fn batches_options_drop_last_reshuffle_shuffle() {
    let (x, y) = numbered(23);
    let mut b = Batches::new(x.clone(), y.clone(), 5, 1)
        .unwrap()
        .drop_last(true);
    assert_eq!(b.batches_per_epoch(), 4);
    for _ in 0..2 {
        let got: Vec<usize> = b.epoch().flat_map(|bt| ids(&bt)).collect();
        assert_eq!(got.len(), 20);
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 20);
    }

    let mut b = Batches::new(x.clone(), y.clone(), 5, 1)
        .unwrap()
        .reshuffle(false);
    let e0: Vec<usize> = b.epoch().flat_map(|bt| ids(&bt)).collect();
    let e1: Vec<usize> = b.epoch().flat_map(|bt| ids(&bt)).collect();
    assert_eq!(e0, e1);

    let mut b = Batches::new(x.clone(), y.clone(), 5, 1)
        .unwrap()
        .shuffle(false);
    let e0: Vec<usize> = b.epoch().flat_map(|bt| ids(&bt)).collect();
    assert_eq!(e0, (0..23).collect::<Vec<_>>());

    // Fewer examples than a batch with drop_last: no batch at all, the iterator ends.
    let (x3, y3) = numbered(3);
    let mut b = Batches::new(x3, y3, 5, 0).unwrap().drop_last(true);
    assert_eq!(b.batches_per_epoch(), 0);
    assert!(b.next().is_none());
    // Empty data set: likewise.
    let mut b = Batches::new(
        Tensor::zeros(IxDyn(&[0, 2])),
        Tensor::zeros(IxDyn(&[0])),
        4,
        0,
    )
    .unwrap();
    assert!(b.is_empty() && b.next().is_none());
}

#[test]
fn batches_are_deterministic_per_seed() {
    let (x, y) = numbered(40);
    let run = |seed| {
        Batches::new(x.clone(), y.clone(), 6, seed)
            .unwrap()
            .take(20)
            .map(|bt| ids(&bt))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn seek_resumes_the_same_continuation() {
    let (x, y) = numbered(37);
    let mut a = Batches::new(x.clone(), y.clone(), 4, 11).unwrap();
    // Take 23 batches (into epoch 2 of 10 batches each), note the position.
    for _ in 0..23 {
        a.next().unwrap();
    }
    let pos = a.position();
    assert_eq!(pos, Position { epoch: 2, batch: 3 });
    let rest: Vec<Vec<usize>> = a.by_ref().take(25).map(|bt| ids(&bt)).collect();

    let mut b = Batches::new(x.clone(), y.clone(), 4, 11).unwrap();
    b.seek(pos).unwrap();
    let resumed: Vec<Vec<usize>> = b.by_ref().take(25).map(|bt| ids(&bt)).collect();
    assert_eq!(resumed, rest);
    assert_eq!(a.position(), b.position());

    // Seeking backwards replays.
    b.seek(Position { epoch: 0, batch: 0 }).unwrap();
    let mut c = Batches::new(x.clone(), y.clone(), 4, 11).unwrap();
    for _ in 0..15 {
        assert_eq!(ids(&b.next().unwrap()), ids(&c.next().unwrap()));
    }
    // The end of an epoch is the start of the next.
    b.seek(Position {
        epoch: 4,
        batch: 10,
    })
    .unwrap();
    assert_eq!(b.position(), Position { epoch: 5, batch: 0 });
    assert!(matches!(
        b.seek(Position {
            epoch: 0,
            batch: 11
        }),
        Err(Error::OutOfBounds(_))
    ));
    // An epoch iterator stops at the epoch's end even mid-way.
    b.seek(Position { epoch: 1, batch: 7 }).unwrap();
    let e = b.epoch();
    assert_eq!(e.len(), 3);
    assert_eq!(e.count(), 3);
    assert_eq!(b.position(), Position { epoch: 2, batch: 0 });
}

#[test]
fn batches_reject_bad_arguments() {
    let (x, y) = numbered(10);
    assert!(matches!(
        Batches::new(x.clone(), y.clone(), 0, 0),
        Err(Error::InvalidArgument(_))
    ));
    let (_, y9) = numbered(9);
    assert!(matches!(
        Batches::new(x.clone(), y9, 2, 0),
        Err(Error::ShapeMismatch { .. })
    ));
    let scalar = Tensor::from_elem(IxDyn(&[]), 1.0);
    assert!(matches!(
        Batches::new(scalar, y, 2, 0),
        Err(Error::Rank { .. })
    ));
}

#[test]
fn batches_handle_non_standard_layout_and_higher_rank() {
    // x transposed (Fortran-order strides), y rank 3.
    let x = Tensor::from_shape_fn(IxDyn(&[2, 6]), |ix| (ix[1] * 10 + ix[0]) as f32).reversed_axes();
    let y = Tensor::from_shape_fn(IxDyn(&[6, 2, 2]), |ix| {
        (ix[0] * 100 + ix[1] * 2 + ix[2]) as f32
    });
    let mut b = Batches::new(x, y, 4, 3).unwrap();
    for (xb, yb) in b.epoch() {
        for (xr, yr) in xb.outer_iter().zip(yb.outer_iter()) {
            let i = (xr[0] / 10.0) as usize;
            assert_eq!(xr[1], (i * 10 + 1) as f32);
            assert_eq!(yr[[1, 1]], (i * 100 + 3) as f32);
        }
    }
}

// ------------------------------------------------------------ the shipped slice

#[test]
fn embedded_fashion_mnist_loads() {
    let m = Mnist::embedded().unwrap();
    assert_eq!(m.train_images.images().shape(), &[10_000, 28, 28]);
    assert_eq!(m.train_labels.len(), 10_000);
    assert_eq!(m.test_images.images().shape(), &[2_000, 28, 28]);
    assert_eq!(m.test_labels.len(), 2_000);
    for labels in [&m.train_labels, &m.test_labels] {
        assert!(labels.iter().all(|&l| l < 10));
        // Every class is present.
        assert_eq!(labels.iter().collect::<HashSet<_>>().len(), 10);
    }
    for set in [&m.train_images, &m.test_images] {
        let (lo, hi) = set
            .images()
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert_eq!((lo, hi), (0.0, 1.0));
    }
    assert_eq!(Mnist::load(default_data_dir()).unwrap(), m);
    assert!(default_data_dir().join("LICENSE").is_file());
}

/// When Debian's `dataset-fashion-mnist` is installed, the slice must be the
/// head of the full data set (skipped otherwise).
#[test]
fn embedded_slice_is_the_head_of_the_full_set() {
    let full = Path::new("/usr/share/datasets/fashion-mnist");
    if !full.is_dir() {
        eprintln!("skipped: {} not installed", full.display());
        return;
    }
    let m = Mnist::embedded().unwrap();
    for (stem, slice_labels) in [("train", &m.train_labels), ("t10k", &m.test_labels)] {
        let labels = read_idx_labels(full.join(format!("{stem}-labels-idx1-ubyte.gz"))).unwrap();
        assert_eq!(&labels[..slice_labels.len()], &slice_labels[..]);
    }
    let test = read_idx_images(full.join("t10k-images-idx3-ubyte.gz")).unwrap();
    assert_eq!(
        test.images().slice(ndarray::s![..2000, .., ..]),
        m.test_images
            .images()
            .view()
            .into_dimensionality::<ndarray::Ix3>()
            .unwrap()
    );
}
