//! [`RngState`]: the exact position of a [`RunTime`](crate::RunTime)'s random
//! generator, so a training run resumed from a checkpoint draws the same dropout
//! masks as one that was never stopped.
//!
//! The generator is ChaCha8: its whole state is a 32-byte key (the seed), a
//! 64-bit stream number and the position in the stream, counted in 32-bit words.
//! [`RngState`] holds those three and writes them as one line of text (so it fits
//! a checkpoint's string metadata) that [`str::parse`] reads back, checking every
//! part.
//!
//! ```
//! use adgraph::{RngState, RunTime};
//! let mut a = RunTime::with_seed(7);
//! // ... cycles that draw dropout masks ...
//! let saved = a.rng_state().to_string();
//! let mut b = RunTime::new();
//! b.set_rng_state(&saved.parse::<RngState>().unwrap());
//! assert_eq!(a.rng_state(), b.rng_state());
//! assert!("chacha8:zz".parse::<RngState>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::Error;

/// The text form's first field: the generator's kind, so a state of another
/// generator (or another version of this format) is refused, not misread.
const TAG: &str = "chacha8";

/// Positions in a ChaCha stream: 2^64 blocks of 16 words.
const WORD_POS_LIMIT: u128 = 1 << 68;

/// The state of a [`RunTime`](crate::RunTime)'s ChaCha8 random generator: key,
/// stream and word position. Read it with
/// [`RunTime::rng_state`](crate::RunTime::rng_state), restore it with
/// [`RunTime::set_rng_state`](crate::RunTime::set_rng_state).
///
/// Its text form (`Display`) is `chacha8:<key, 64 hex digits>:<stream, 16 hex
/// digits>:<word position, 32 hex digits>`; parsing it (`FromStr`) fails with
/// [`Error::InvalidArgument`] saying which part is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RngState {
    seed: [u8; 32],
    stream: u64,
    word_pos: u128,
}

impl RngState {
    /// The state of `rng`.
    pub(crate) fn of(rng: &ChaCha8Rng) -> Self {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos(),
        }
    }

    /// A generator at exactly this state.
    pub(crate) fn to_rng(self) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(self.word_pos);
        rng
    }
}

impl fmt::Display for RngState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TAG}:")?;
        for b in self.seed {
            write!(f, "{b:02x}")?;
        }
        write!(f, ":{:016x}:{:032x}", self.stream, self.word_pos)
    }
}

/// Checks that `part` (named `what` in errors) is exactly `digits` hex digits.
fn check_hex(part: &str, digits: usize, what: &str, text: &str) -> Result<(), Error> {
    if part.len() != digits || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(format!(
            "random generator state {text:?}: the {what} must be {digits} hex digits, got {part:?}"
        )));
    }
    Ok(())
}

/// Parses `part`, at most 32 hex digits checked by [`check_hex`].
fn hex_value(part: &str) -> u128 {
    part.bytes().fold(0, |acc, b| {
        (acc << 4) | u128::from((b as char).to_digit(16).unwrap_or(0))
    })
}

impl FromStr for RngState {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = text.trim().split(':').collect();
        let [tag, key, stream, pos] = parts[..] else {
            return Err(Error::invalid(format!(
                "random generator state {text:?}: expected 4 fields \
                 `{TAG}:<key>:<stream>:<word position>`, got {}",
                parts.len()
            )));
        };
        if tag != TAG {
            return Err(Error::invalid(format!(
                "random generator state {text:?}: generator {tag:?} is not {TAG:?}"
            )));
        }
        check_hex(key, 64, "key", text)?;
        check_hex(stream, 16, "stream", text)?;
        check_hex(pos, 32, "word position", text)?;
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = hex_value(&key[2 * i..2 * i + 2]) as u8;
        }
        let stream = hex_value(stream) as u64;
        let word_pos = hex_value(pos);
        if word_pos >= WORD_POS_LIMIT {
            return Err(Error::invalid(format!(
                "random generator state {text:?}: word position {word_pos} is past the end \
                 of a ChaCha stream (2^68 words)"
            )));
        }
        Ok(RngState {
            seed,
            stream,
            word_pos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn text_round_trip_continues_the_stream() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        rng.set_stream(5);
        // Stop mid-block and mid-buffer, where a naive copy would lose words.
        for _ in 0..37 {
            rng.next_u32();
        }
        let state = RngState::of(&rng);
        let parsed: RngState = state.to_string().parse().unwrap();
        assert_eq!(parsed, state);
        let mut copy = parsed.to_rng();
        for _ in 0..100 {
            assert_eq!(copy.next_u64(), rng.next_u64());
        }
    }

    #[test]
    fn malformed_text_is_refused_with_the_reason() {
        let good = RngState::of(&ChaCha8Rng::seed_from_u64(1)).to_string();
        let cases = [
            ("", "4 fields"),
            ("chacha8:00", "4 fields"),
            (&good.replacen("chacha8", "pcg64", 1), "is not"),
            (&format!("chacha8:g{}", &good[9..]), "key"),
            (&format!("{}0", good), "word position"),
            (
                &format!("{}:{:032x}", &good[..good.rfind(':').unwrap()], 1u128 << 68),
                "past the end",
            ),
        ];
        for (text, why) in cases {
            let err = text.parse::<RngState>().unwrap_err().to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
