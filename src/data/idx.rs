//! IDX files, the format of MNIST and Fashion-MNIST, gzipped or not.
//!
//! An IDX file is a 4-byte magic number `00 00 TT RR` (`TT` the element type,
//! `RR` the rank), `RR` big-endian `u32` dimensions, then the elements in
//! row-major order. This module reads and writes the unsigned-byte type
//! (`TT = 0x08`), the only one MNIST-style data sets use: labels are
//! `0x00000801` (rank 1), images `0x00000803` (rank 3).
//!
//! Whether a file is gzipped is decided by its first two bytes (`1f 8b`), not
//! by its name. Every size is checked against the header *before* any large
//! allocation: an uncompressed file must be exactly header + data long, a gzip
//! stream is read through a reader bounded by the size the header claims, and
//! no header may claim more than [`MAX_IDX_ELEMENTS`] elements.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use flate2::{read::MultiGzDecoder, write::GzEncoder, Compression};
use ndarray::IxDyn;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The largest number of elements an IDX header may claim (2³¹, 2 GiB of bytes).
///
/// Larger claims are refused before anything is allocated. The full MNIST
/// training images are 47 million elements, far below it.
pub const MAX_IDX_ELEMENTS: usize = 1 << 31;

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate cannot expand data by more than about 1032:1, so a gzip file of `m`
/// bytes cannot hold more than `m * 1032` bytes (a few bytes' slack added).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The IDX element type code of unsigned bytes.
const TYPE_U8: u8 = 0x08;

/// The name errors give to IDX data read from memory.
const IN_MEMORY: &str = "(in memory)";

/// How many trailing bytes are counted for an error message, at most.
const TRAILING_COUNT_LIMIT: u64 = 1 << 20;

/// The raw contents of an unsigned-byte IDX file: its dimensions and its bytes
/// in row-major order.
///
/// ```
/// use adgraph::data::IdxData;
/// let d = IdxData::new(vec![2, 3], vec![0, 1, 2, 3, 4, 5]).unwrap();
/// assert_eq!(d.head(1).unwrap().data(), &[0, 1, 2]);
/// assert!(IdxData::new(vec![2, 3], vec![0; 5]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxData {
    dims: Vec<usize>,
    data: Vec<u8>,
}

impl IdxData {
    /// Bytes with their dimensions.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the rank is 0 or above 255, a dimension
    /// does not fit in a `u32`, or `data.len()` is not the product of `dims`.
    pub fn new(dims: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        if dims.is_empty() || dims.len() > usize::from(u8::MAX) {
            return Err(Error::invalid(format!(
                "an IDX file has rank 1 to 255, got dims {dims:?}"
            )));
        }
        if let Some(d) = dims.iter().find(|&&d| u32::try_from(d).is_err()) {
            return Err(Error::invalid(format!(
                "IDX dimension {d} does not fit in 32 bits"
            )));
        }
        let n = element_count(&dims).ok_or_else(|| {
            Error::invalid(format!("IDX dims {dims:?} overflow the address space"))
        })?;
        if n != data.len() {
            return Err(Error::invalid(format!(
                "IDX dims {dims:?} hold {n} bytes, but {} bytes were given",
                data.len()
            )));
        }
        Ok(IdxData { dims, data })
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The bytes, row-major.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The bytes, row-major, taken out.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    /// The first `n` items along the first axis (e.g. the first `n` images).
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when there are fewer than `n` items.
    pub fn head(&self, n: usize) -> Result<IdxData> {
        let have = self.dims.first().copied().unwrap_or(0);
        if n > have {
            return Err(Error::OutOfBounds(format!(
                "asked for the first {n} items of an IDX array with {have}"
            )));
        }
        let item: usize = self.dims.iter().skip(1).product();
        let mut dims = self.dims.clone();
        dims[0] = n;
        Ok(IdxData {
            dims,
            data: self.data[..n * item].to_vec(),
        })
    }
}

/// `dims`' product, or `None` on overflow.
fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn path_string(path: &Path) -> String {
    path.display().to_string()
}

fn data_err(path: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        path: path_string(path),
        message: message.into(),
    }
}

fn io_err(path: &Path, e: &io::Error) -> Error {
    Error::Io {
        path: path_string(path),
        message: e.to_string(),
    }
}

/// An I/O error met while reading the contents: a corrupt gzip stream is a
/// data error, anything else (permissions, disk) an I/O error.
fn read_err(path: &Path, gz: bool, e: &io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof if gz => data_err(path, format!("truncated gzip stream: {e}")),
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput if gz => {
            data_err(path, format!("corrupt gzip stream: {e}"))
        }
        _ => io_err(path, e),
    }
}

fn dtype_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "16-bit integer",
        0x0C => "32-bit integer",
        0x0D => "32-bit float",
        0x0E => "64-bit float",
        _ => "unknown",
    }
}

/// Fills `buf` as far as the reader goes; returns how many bytes were read.
fn read_fully(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads the header's bytes, or says the file ends inside the header.
fn read_header_bytes(
    r: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    gz: bool,
    what: &str,
) -> Result<()> {
    let got = read_fully(r, buf).map_err(|e| read_err(path, gz, &e))?;
    if got < buf.len() {
        return Err(data_err(
            path,
            format!(
                "truncated IDX header: the file ends inside the {what} ({got} of {} bytes)",
                buf.len()
            ),
        ));
    }
    Ok(())
}

/// Reads exactly `claim` bytes, never allocating more than `claim` (the
/// buffer grows geometrically as data really arrives), then checks the
/// stream ends there.
fn read_body(r: &mut impl Read, claim: usize, path: &Path, gz: bool) -> Result<Vec<u8>> {
    const FIRST_CHUNK: usize = 1 << 16;
    let mut data: Vec<u8> = Vec::new();
    let mut filled = 0;
    while filled < claim {
        if filled == data.len() {
            let new_len = claim.min(data.len().saturating_mul(2).max(FIRST_CHUNK));
            data.reserve_exact(new_len - data.len());
            data.resize(new_len, 0);
        }
        match r.read(&mut data[filled..]) {
            Ok(0) => {
                return Err(data_err(
                    path,
                    format!(
                        "truncated: the header claims {claim} data bytes, but the {}data ends after {filled}",
                        if gz { "decompressed " } else { "" }
                    ),
                ))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(path, gz, &e)),
        }
    }
    let mut probe = [0u8; 1];
    if read_fully(r, &mut probe).map_err(|e| read_err(path, gz, &e))? > 0 {
        let more = io::copy(&mut r.take(TRAILING_COUNT_LIMIT), &mut io::sink()).unwrap_or(0);
        let count = if more + 1 >= TRAILING_COUNT_LIMIT {
            format!("at least {TRAILING_COUNT_LIMIT}")
        } else {
            (more + 1).to_string()
        };
        return Err(data_err(
            path,
            format!("{count} trailing bytes after the {claim} data bytes the header claims"),
        ));
    }
    Ok(data)
}

/// Reads an unsigned-byte IDX file; with `rank`, only of that rank.
fn read_idx_u8(path: &Path, rank: Option<u8>) -> Result<IdxData> {
    let mut file = File::open(path).map_err(|e| io_err(path, &e))?;
    let meta = file.metadata().map_err(|e| io_err(path, &e))?;
    let mut magic2 = [0u8; 2];
    let got = read_fully(&mut file, &mut magic2).map_err(|e| io_err(path, &e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_err(path, &e))?;
    let gz = got == 2 && magic2 == GZIP_MAGIC;
    // Only a regular file's length is known before reading it all (not a pipe's).
    let len = meta.is_file().then_some(meta.len());
    read_idx_stream(BufReader::new(file), gz, len, path, rank)
}

/// Reads an unsigned-byte IDX file from `raw` (gzipped if `gz`), whose length
/// is `len` when known; errors name `path`.
fn read_idx_stream(
    raw: impl Read,
    gz: bool,
    len: Option<u64>,
    path: &Path,
    rank: Option<u8>,
) -> Result<IdxData> {
    let mut reader: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(raw))
    } else {
        Box::new(raw)
    };

    let mut magic = [0u8; 4];
    read_header_bytes(&mut reader, &mut magic, path, gz, "magic number")?;
    let magic_num = u32::from_be_bytes(magic);
    let expected_magic = |r: u8| 0x0800 | u32::from(r);
    if magic[0] != 0 || magic[1] != 0 {
        let want = match rank {
            Some(r) => format!("{:#010x}", expected_magic(r)),
            None => "00 00 08 <rank>".to_string(),
        };
        return Err(data_err(
            path,
            format!("not an IDX file: magic number {magic_num:#010x} (expected {want})"),
        ));
    }
    if magic[2] != TYPE_U8 {
        return Err(data_err(
            path,
            format!(
                "unsupported IDX element type {:#04x} ({}) in magic number {magic_num:#010x}: only unsigned bytes (0x08) are read",
                magic[2],
                dtype_name(magic[2])
            ),
        ));
    }
    let ndim = magic[3];
    match rank {
        Some(r) if ndim != r => {
            return Err(data_err(
                path,
                format!(
                    "IDX magic number {magic_num:#010x} says rank {ndim}, expected rank {r} ({:#010x}{})",
                    expected_magic(r),
                    match r {
                        1 => ", labels",
                        3 => ", images",
                        _ => "",
                    }
                ),
            ))
        }
        None if ndim == 0 => {
            return Err(data_err(
                path,
                "IDX magic number says rank 0; a data file has rank 1 or more",
            ))
        }
        _ => {}
    }

    let mut dim_bytes = vec![0u8; 4 * usize::from(ndim)];
    read_header_bytes(&mut reader, &mut dim_bytes, path, gz, "dimensions")?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let claim = match element_count(&dims) {
        Some(n) if n <= MAX_IDX_ELEMENTS => n,
        _ => {
            return Err(data_err(
                path,
                format!(
                    "IDX header claims dims {dims:?}, more than the {MAX_IDX_ELEMENTS} elements this reader accepts"
                ),
            ))
        }
    };
    let header_len = 4 + dim_bytes.len() as u64;
    if let Some(file_len) = len {
        if gz {
            let most = file_len.saturating_mul(MAX_DEFLATE_RATIO);
            if claim as u64 > most {
                return Err(data_err(
                    path,
                    format!(
                        "IDX header claims dims {dims:?} ({claim} bytes), more than a {file_len}-byte gzip file can hold"
                    ),
                ));
            }
        } else {
            let data_len = file_len.saturating_sub(header_len);
            if data_len < claim as u64 {
                return Err(data_err(
                    path,
                    format!(
                        "truncated: IDX header claims dims {dims:?} ({claim} data bytes), but the file holds only {data_len} after its {header_len}-byte header"
                    ),
                ));
            }
            if data_len > claim as u64 {
                return Err(data_err(
                    path,
                    format!(
                        "{} trailing bytes after the {claim} data bytes that IDX dims {dims:?} claim",
                        data_len - claim as u64
                    ),
                ));
            }
        }
    }
    let data = read_body(&mut reader, claim, path, gz)?;
    Ok(IdxData { dims, data })
}

/// Reads an unsigned-byte IDX file of any rank, gzipped or not.
///
/// # Errors
/// [`Error::Io`] when the file cannot be opened or read; [`Error::Data`] (naming
/// the file) when it is not an unsigned-byte IDX file, its header claims more
/// than [`MAX_IDX_ELEMENTS`] elements or more than the file can hold, or its
/// data is shorter or longer than the header says.
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxData> {
    read_idx_u8(path.as_ref(), None)
}

/// Reads an unsigned-byte IDX file held in memory, gzipped or not (decided by
/// its first two bytes); with `rank`, only a file of that rank (1 for labels, 3
/// for images) is accepted. The checks are [`read_idx`]'s, the length of
/// `bytes` standing for the file's size; errors name the file `(in memory)`.
///
/// ```
/// use adgraph::data::read_idx_bytes;
/// let labels = [0, 0, 8, 1, 0, 0, 0, 2, 7, 9];
/// assert_eq!(read_idx_bytes(&labels, Some(1)).unwrap().data(), &[7, 9]);
/// assert!(read_idx_bytes(&labels, Some(3)).is_err());
/// assert!(read_idx_bytes(&labels[..9], None).is_err());
/// ```
///
/// # Errors
/// [`Error::Data`] as [`read_idx`], and when `rank` is given and the file's
/// rank differs.
pub fn read_idx_bytes(bytes: &[u8], rank: Option<u8>) -> Result<IdxData> {
    let gz = bytes.starts_with(&GZIP_MAGIC);
    read_idx_stream(
        bytes,
        gz,
        Some(bytes.len() as u64),
        Path::new(IN_MEMORY),
        rank,
    )
}

/// Writes an unsigned-byte IDX file; gzipped at the best compression level
/// when the file name ends in `.gz`.
///
/// The gzip header carries no file name or time stamp, so the same data always
/// gives the same bytes.
///
/// # Errors
/// [`Error::Io`] when the file cannot be created or written.
pub fn write_idx(path: impl AsRef<Path>, idx: &IdxData) -> Result<()> {
    let path = path.as_ref();
    let file = File::create(path).map_err(|e| io_err(path, &e))?;
    let mut out = BufWriter::new(file);
    let gz = path.extension().is_some_and(|e| e == "gz");
    let write = |w: &mut dyn Write| -> io::Result<()> {
        // `IdxData::new` guarantees rank <= 255 and each dim fits in u32.
        w.write_all(&[0, 0, TYPE_U8, idx.dims.len() as u8])?;
        for &d in &idx.dims {
            w.write_all(&(d as u32).to_be_bytes())?;
        }
        w.write_all(&idx.data)
    };
    let res = if gz {
        let mut enc = GzEncoder::new(&mut out, Compression::best());
        write(&mut enc).and_then(|()| enc.finish().map(|_| ()))
    } else {
        write(&mut out)
    };
    res.and_then(|()| out.flush()).map_err(|e| io_err(path, &e))
}

/// A set of grey-scale images with values in `[0, 1]`, as a tensor of shape
/// `[n, rows, cols]`.
///
/// ```
/// use adgraph::data::ImageSet;
/// let set = ImageSet::from_tensor(adgraph::tensor::full(&[5, 28, 28], 0.5)).unwrap();
/// assert_eq!((set.len(), set.rows(), set.cols()), (5, 28, 28));
/// assert_eq!(set.nhwc().shape(), &[5, 28, 28, 1]);
/// assert_eq!(set.flat().shape(), &[5, 784]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    images: Tensor,
}

impl ImageSet {
    /// Wraps a tensor of shape `[n, rows, cols]`.
    ///
    /// # Errors
    /// [`Error::Rank`] when the tensor is not of rank 3.
    pub fn from_tensor(images: Tensor) -> Result<Self> {
        if images.ndim() != 3 {
            return Err(Error::Rank {
                what: "image set".into(),
                expected: "3 ([n, rows, cols])".into(),
                got: crate::shape::TensorShape::from(images.shape()),
            });
        }
        Ok(ImageSet {
            images: images.as_standard_layout().into_owned(),
        })
    }

    /// How many images.
    pub fn len(&self) -> usize {
        self.images.shape()[0]
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image height.
    pub fn rows(&self) -> usize {
        self.images.shape()[1]
    }

    /// Image width.
    pub fn cols(&self) -> usize {
        self.images.shape()[2]
    }

    /// The images, shape `[n, rows, cols]`.
    pub fn images(&self) -> &Tensor {
        &self.images
    }

    /// The images taken out, shape `[n, rows, cols]`.
    pub fn into_tensor(self) -> Tensor {
        self.images
    }

    /// A copy with a trailing channel axis, shape `[n, rows, cols, 1]` (NHWC, for convolutions).
    pub fn nhwc(&self) -> Tensor {
        self.copy_as(&[self.len(), self.rows(), self.cols(), 1])
    }

    /// A copy with each image flattened, shape `[n, rows * cols]` (for dense layers).
    pub fn flat(&self) -> Tensor {
        self.copy_as(&[self.len(), self.rows() * self.cols()])
    }

    /// A copy of the pixels, row-major, in a tensor of `shape` (of the same size).
    fn copy_as(&self, shape: &[usize]) -> Tensor {
        let mut out = Tensor::zeros(IxDyn(shape));
        match (out.as_slice_mut(), self.images.as_slice()) {
            // Always the case: both are fresh or kept in standard layout.
            (Some(d), Some(s)) => d.copy_from_slice(s),
            _ => out
                .iter_mut()
                .zip(self.images.iter())
                .for_each(|(d, s)| *d = *s),
        }
        out
    }
}

/// Reads an MNIST-style image file (magic `0x00000803`, gzipped or not) as
/// `f32` pixels scaled to `[0, 1]` (byte / 255).
///
/// # Errors
/// As [`read_idx`], and [`Error::Data`] when the file is not of rank 3.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<ImageSet> {
    let idx = read_idx_u8(path.as_ref(), Some(3))?;
    let pixels: Vec<f32> = idx.data.iter().map(|&b| f32::from(b) / 255.0).collect();
    let images = Tensor::from_shape_vec(IxDyn(&idx.dims), pixels)?;
    Ok(ImageSet { images })
}

/// Reads an MNIST-style label file (magic `0x00000801`, gzipped or not).
///
/// # Errors
/// As [`read_idx`], and [`Error::Data`] when the file is not of rank 1.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    Ok(read_idx_u8(path.as_ref(), Some(1))?.data)
}
