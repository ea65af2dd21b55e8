//! English words for character-level language models: the word list of
//! Debian's `wamerican` package (SCOWL size 50), as the benchmark README
//! defines it for W7 and W8 (`../shared/bench/README.md`).
//!
//! - Words: the lines of 2 to 15 characters `a`–`z`, deduplicated, sorted by
//!   byte value: 63,612 words. The filtered list ships with the repository
//!   (`data/words/words.txt.gz`, with the package's copyright file beside it),
//!   so nothing needs installing; [`Words::load`] filters a list file itself.
//! - Split ([`Words::split`]): a Fisher–Yates shuffle driven by SplitMix64,
//!   then the last tenth is validation (57,251 training and 6,361 validation
//!   words with seed 0).
//! - Tokens ([`token_stream`]): `.` = 0 (the boundary before and after every
//!   word), `a`..`z` = 1..26, each split one sequence `. w1 . w2 . … .`.
//! - Windows ([`windows`]): input `s[k..k+T]`, target `s[k+1..k+T+1]`.
//!
//! ```
//! use adgraph::data::words::{token_stream, Words};
//! let words = Words::embedded().unwrap();
//! assert_eq!(words.len(), 63_612);
//! let (train, val) = words.split(0);
//! assert_eq!(&train[..2], ["powerless", "tick"]);
//! assert_eq!(val[0], "yokes");
//! assert_eq!(token_stream(&train).len(), 529_538);
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use ndarray::IxDyn;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Tokens: `.` (the word boundary) and `a`..`z`.
pub const VOCAB: usize = 27;
/// The shortest and longest words kept.
pub const WORD_LENGTHS: std::ops::RangeInclusive<usize> = 2..=15;

/// The embedded filtered word list (gzip), beside its `copyright` file.
pub fn default_words_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join("words")
        .join("words.txt.gz")
}

/// A sorted, deduplicated list of lower-case words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Words {
    words: Vec<String>,
}

impl Words {
    /// The list shipped with the repository (`data/words/words.txt.gz`).
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Data`] naming the file when it cannot be read.
    pub fn embedded() -> Result<Words> {
        Words::load(default_words_path())
    }

    /// Reads a word list (one word per line; gzip-compressed when the name
    /// ends in `.gz`), keeping the words of 2 to 15 letters `a`–`z`,
    /// deduplicated and sorted: `/usr/share/dict/american-english` gives the
    /// embedded list.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Data`] when it is
    /// not UTF-8 or holds no word.
    pub fn load(path: impl AsRef<Path>) -> Result<Words> {
        let path = path.as_ref();
        let io = |e: std::io::Error| Error::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut bytes = Vec::new();
        if path.extension().is_some_and(|e| e == "gz") {
            GzDecoder::new(file).read_to_end(&mut bytes).map_err(io)?;
        } else {
            std::io::BufReader::new(file)
                .read_to_end(&mut bytes)
                .map_err(io)?;
        }
        let text = String::from_utf8(bytes).map_err(|e| Error::Data {
            path: path.display().to_string(),
            message: format!("not UTF-8: {e}"),
        })?;
        let words = Words::from_lines(text.lines());
        if words.is_empty() {
            return Err(Error::Data {
                path: path.display().to_string(),
                message: "holds no word of 2 to 15 letters a-z".into(),
            });
        }
        Ok(words)
    }

    /// The words of `lines` that are 2 to 15 letters `a`–`z`, deduplicated
    /// and sorted by byte value.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Words {
        let mut words: Vec<String> = lines
            .into_iter()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|w| {
                WORD_LENGTHS.contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())
            })
            .map(str::to_string)
            .collect();
        words.sort_unstable();
        words.dedup();
        Words { words }
    }

    /// The number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there is no word.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words, sorted.
    pub fn as_slice(&self) -> &[String] {
        &self.words
    }

    /// The words shuffled by Fisher–Yates with SplitMix64 from `seed`, split
    /// into training words and validation words (the last `len / 10`).
    pub fn split(&self, seed: u64) -> (Vec<String>, Vec<String>) {
        let mut words = self.words.clone();
        let mut rng = SplitMix64(seed);
        for i in (1..words.len()).rev() {
            let j = (rng.next() % (i as u64 + 1)) as usize;
            words.swap(i, j);
        }
        let val = words.split_off(words.len() - words.len() / 10);
        (words, val)
    }
}

/// SplitMix64 (Steele, Lea and Flood), the generator of the benchmark's shuffle.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The token of a character: `.` is 0, `a`..`z` are 1..26; `None` for others.
pub fn token(c: char) -> Option<u8> {
    match c {
        '.' => Some(0),
        'a'..='z' => Some(c as u8 - b'a' + 1),
        _ => None,
    }
}

/// The character of a token (`.` for 0, `a`..`z` for 1..26, `?` past them).
pub fn character(token: usize) -> char {
    match token {
        0 => '.',
        1..=26 => (b'a' + token as u8 - 1) as char,
        _ => '?',
    }
}

/// The words as one token sequence `. w1 . w2 . … . wn .`.
pub fn token_stream<S: AsRef<str>>(words: &[S]) -> Vec<u8> {
    let mut out = vec![0u8];
    for w in words {
        out.extend(w.as_ref().chars().filter_map(token));
        out.push(0);
    }
    out
}

/// Windows of `len` tokens at `offsets` of `stream`: inputs `s[k..k+len]` and
/// targets `s[k+1..k+len+1]`, as `[offsets.len(), len]` tensors of token
/// numbers (as `f32`, the integer inputs of `gather` and the sparse
/// cross-entropy).
///
/// # Errors
/// [`Error::OutOfBounds`] when a window runs past the stream.
pub fn windows(stream: &[u8], offsets: &[usize], len: usize) -> Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(offsets.len() * len);
    let mut y = Vec::with_capacity(offsets.len() * len);
    for &k in offsets {
        if k + len + 1 > stream.len() {
            return Err(Error::OutOfBounds(format!(
                "a window of {len} tokens at offset {k} needs {} tokens, the stream has {}",
                k + len + 1,
                stream.len()
            )));
        }
        x.extend(stream[k..k + len].iter().map(|&t| f32::from(t)));
        y.extend(stream[k + 1..k + len + 1].iter().map(|&t| f32::from(t)));
    }
    let shape = IxDyn(&[offsets.len(), len]);
    Ok((
        Tensor::from_shape_vec(shape.clone(), x)?,
        Tensor::from_shape_vec(shape, y)?,
    ))
}

/// The offsets of the non-overlapping validation windows of `len` tokens:
/// `0, len, 2 len, …` while a window and its target fit.
pub fn validation_offsets(stream_len: usize, len: usize) -> Vec<usize> {
    (0..)
        .map(|i| i * len)
        .take_while(|&k| k + len < stream_len)
        .collect()
}
