//! What the two character-level language models (`char_lstm`, `char_transformer`)
//! share: the word streams of W7/W8 (`../shared/bench/README.md`), random
//! training windows, the validation loss, and sampling new words.
//!
//! A model here is any graph that maps a placeholder of token windows `x`
//! (`[batch, T]`, token numbers as `f32`) to logits `[batch, T, 27]`, causally
//! (the logits at position `t` see only `x[.., ..=t]`).

use std::collections::HashSet;

use adgraph::data::words::{self, Words};
use adgraph::{Feed, Node, RunTime, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Res;

/// Tokens in the vocabulary: `.` and `a`..`z`.
pub const VOCAB: usize = 27;
/// Context length of a window (W7/W8: 16).
pub const CONTEXT: usize = 16;

/// The training and validation streams of the embedded word list, split as W7/W8 are.
pub struct CharData {
    /// Training stream `. w1 . w2 . … .` (529,538 tokens).
    pub train: Vec<u8>,
    /// Validation stream (58,978 tokens).
    pub val: Vec<u8>,
    /// Every word of the list, to tell a sampled word that is new from one that is not.
    pub known: HashSet<String>,
}

impl CharData {
    /// The embedded word list, shuffled and split with seed 0 (the bench's split).
    pub fn load() -> Res<CharData> {
        let words = Words::embedded()?;
        let (train, val) = words.split(0);
        Ok(CharData {
            train: words::token_stream(&train),
            val: words::token_stream(&val),
            known: words.as_slice().iter().cloned().collect(),
        })
    }

    /// As [`load`](CharData::load), from the word list file `path` (one word
    /// per line, gzip when it ends in `.gz`), filtered as the embedded one.
    pub fn load_list(path: &std::path::Path) -> Res<CharData> {
        let words = Words::load(path).map_err(|e| format!("--data {}: {e}", path.display()))?;
        let (train, val) = words.split(0);
        if val.is_empty() {
            return Err(format!("--data {}: too few words to split", path.display()).into());
        }
        Ok(CharData {
            train: words::token_stream(&train),
            val: words::token_stream(&val),
            known: words.as_slice().iter().cloned().collect(),
        })
    }

    /// The training windows of step `step`: `batch` offsets drawn uniformly
    /// from `0 ..= len − 17` by a generator seeded with `(seed, step)`, so a
    /// resumed run draws the same windows as one never stopped.
    pub fn train_batch(&self, seed: u64, step: usize, batch: usize) -> Res<(Tensor, Tensor)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(step as u64);
        let last = self.train.len() - CONTEXT - 1;
        let offsets: Vec<usize> = (0..batch).map(|_| rng.gen_range(0..=last)).collect();
        Ok(words::windows(&self.train, &offsets, CONTEXT)?)
    }

    /// Mean cross-entropy in nats per predicted token over all non-overlapping
    /// validation windows (3,686 windows, 58,976 predictions), `batch` windows a
    /// run; `loss` is the mean cross-entropy over the positions of a batch.
    pub fn validation_loss(
        &self,
        rt: &mut RunTime,
        (x, y): (&Node, &Node),
        loss: &Node,
        batch: usize,
    ) -> Res<f64> {
        let offsets = words::validation_offsets(self.val.len(), CONTEXT);
        let (mut sum, mut count) = (0.0f64, 0usize);
        for chunk in offsets.chunks(batch) {
            let (xb, yb) = words::windows(&self.val, chunk, CONTEXT)?;
            let feed = Feed::new().with(x, xb)?.with(y, yb)?;
            let value = rt.infer(&[loss], &feed)?;
            sum +=
                f64::from(value[0].iter().next().copied().unwrap_or(f32::NAN)) * chunk.len() as f64;
            count += chunk.len();
        }
        Ok(sum / count as f64)
    }

    /// `n` words sampled from the model at `temperature`, each started from `.`
    /// and ended by the model's next `.` (or after `CONTEXT − 1` letters).
    /// The model runs on all `n` at once, one position a run.
    pub fn sample_words(
        &self,
        rt: &mut RunTime,
        x: &Node,
        logits: &Node,
        n: usize,
        temperature: f32,
        seed: u64,
    ) -> Res<Vec<String>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tokens = vec![vec![0u8]; n];
        let mut done = vec![false; n];
        for t in 0..CONTEXT - 1 {
            let input = Tensor::from_shape_fn(vec![n, CONTEXT], |i| {
                f32::from(tokens[i[0]].get(i[1]).copied().unwrap_or(0))
            });
            let out = rt.infer(&[logits], &Feed::new().with(x, input)?)?;
            for (i, word) in tokens.iter_mut().enumerate() {
                if done[i] {
                    continue;
                }
                let row: Vec<f32> = (0..VOCAB)
                    .map(|v| out[0][[i, t, v]] / temperature)
                    .collect();
                let next = sample(&row, rng.gen::<f32>());
                word.push(next as u8);
                done[i] = next == 0;
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        Ok(tokens
            .iter()
            .map(|w| {
                w[1..]
                    .iter()
                    .take_while(|&&t| t != 0)
                    .map(|&t| words::character(usize::from(t)))
                    .collect()
            })
            .collect())
    }

    /// Whether `word` is in the word list (a sample that is not is a new word).
    pub fn is_known(&self, word: &str) -> bool {
        self.known.contains(word)
    }
}

/// The index drawn from softmax(`logits`) by the uniform number `u` in [0, 1).
fn sample(logits: &[f32], u: f32) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let mut target = u * weights.iter().sum::<f32>();
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return i;
        }
        target -= w;
    }
    weights.len() - 1
}
