//! [`Batches`]: a seedable, shuffling, resumable mini-batch iterator.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::gather_rows;
use crate::error::{Error, Result};
use crate::shape::TensorShape;
use crate::tensor::Tensor;

/// Where a [`Batches`] stands: the batch it yields next is batch `batch` of epoch `epoch`.
///
/// Save it (two integers) with a training checkpoint and hand it to
/// [`Batches::seek`] to resume with exactly the batches an uninterrupted run would see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Position {
    /// The epoch, from 0.
    pub epoch: usize,
    /// The batch within the epoch, from 0.
    pub batch: usize,
}

/// Checks `x` and `y` are not scalars and agree in length along axis 0; returns it.
pub(crate) fn check_pair(x: &Tensor, y: &Tensor, what: &str) -> Result<usize> {
    for (name, t) in [("x", x), ("y", y)] {
        if t.ndim() == 0 {
            return Err(Error::Rank {
                what: format!("{what}: {name}"),
                expected: "1 or more (examples along axis 0)".into(),
                got: TensorShape::from(t.shape()),
            });
        }
    }
    let (nx, ny) = (x.shape()[0], y.shape()[0]);
    if nx != ny {
        return Err(Error::ShapeMismatch {
            what: format!("{what}: y must have as many examples (axis 0) as x, {nx}"),
            expected: TensorShape::from(
                std::iter::once(nx)
                    .chain(y.shape().iter().skip(1).copied())
                    .collect::<Vec<_>>(),
            ),
            got: TensorShape::from(y.shape()),
        });
    }
    Ok(nx)
}

/// Mini-batches of `(x, y)` along axis 0, shuffled per epoch by a seed.
///
/// Each epoch visits every example exactly once: batches of `batch_size`
/// rows, the last one smaller unless [`drop_last`](Batches::drop_last) is set
/// (then the leftover examples of that epoch are skipped). The order of epoch
/// `e` depends only on the seed and `e` (with
/// [`reshuffle`](Batches::reshuffle) off, every epoch uses epoch 0's order;
/// with [`shuffle`](Batches::shuffle) off, the data's own order), so
/// [`position`](Batches::position) and [`seek`](Batches::seek) resume a run
/// exactly, in time independent of the epoch.
///
/// As an [`Iterator`] it runs on across epochs without end (use
/// [`Iterator::take`] or [`Batches::epoch`]); it ends only when an epoch holds
/// no batch (no examples, or fewer than `batch_size` with `drop_last`).
///
/// ```
/// use adgraph::data::{Batches, Position};
/// let x = adgraph::tensor::full(&[10, 3], 1.0);
/// let y = adgraph::tensor::full(&[10, 1], 0.0);
/// let mut b = Batches::new(x, y, 4, 42).unwrap();
/// let sizes: Vec<usize> = b.epoch().map(|(xb, _)| xb.shape()[0]).collect();
/// assert_eq!(sizes, [4, 4, 2]);
/// assert_eq!(b.position(), Position { epoch: 1, batch: 0 });
///
/// let mut b = b.drop_last(true);
/// assert_eq!(b.epoch().count(), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Batches {
    x: Tensor,
    y: Tensor,
    batch_size: usize,
    seed: u64,
    drop_last: bool,
    reshuffle: bool,
    shuffle: bool,
    pos: Position,
    /// The example order of `pos.epoch`.
    order: Vec<usize>,
}

impl Batches {
    /// Batches of `batch_size` examples of `x` and `y` (which must agree in
    /// length along axis 0), shuffled by `seed`, reshuffled each epoch, the
    /// last batch of an epoch kept even if smaller.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `batch_size` is 0; [`Error::Rank`] when
    /// `x` or `y` is a scalar; [`Error::ShapeMismatch`] when their lengths differ.
    pub fn new(x: Tensor, y: Tensor, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid("batch size must be at least 1"));
        }
        check_pair(&x, &y, "Batches")?;
        let standard = |t: Tensor| {
            if t.is_standard_layout() {
                t
            } else {
                t.as_standard_layout().into_owned()
            }
        };
        let mut b = Batches {
            x: standard(x),
            y: standard(y),
            batch_size,
            seed,
            drop_last: false,
            reshuffle: true,
            shuffle: true,
            pos: Position::default(),
            order: Vec::new(),
        };
        b.order = b.order_of(0);
        Ok(b)
    }

    /// Whether to skip each epoch's last batch when it is smaller than
    /// `batch_size` (default: no). Keeps the position, clamped to the new
    /// number of batches per epoch.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self.clamp_position();
        self
    }

    /// Whether each epoch gets its own order (default: yes); if not, every
    /// epoch repeats epoch 0's order.
    pub fn reshuffle(mut self, reshuffle: bool) -> Self {
        self.reshuffle = reshuffle;
        self.order = self.order_of(self.pos.epoch);
        self
    }

    /// Whether to shuffle at all (default: yes); if not, batches follow the data's order.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self.order = self.order_of(self.pos.epoch);
        self
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// How many batches an epoch holds.
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// Where the iterator stands: the batch it yields next.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Moves to `pos`, so the next batch is batch `pos.batch` of epoch
    /// `pos.epoch`, exactly as if all batches before it had been taken.
    /// `batch == batches_per_epoch()` means the start of the next epoch.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] when `pos.batch` is above [`batches_per_epoch`](Batches::batches_per_epoch).
    pub fn seek(&mut self, pos: Position) -> Result<()> {
        let per_epoch = self.batches_per_epoch();
        if pos.batch > per_epoch {
            return Err(Error::OutOfBounds(format!(
                "batch {} of an epoch of {per_epoch} batches",
                pos.batch
            )));
        }
        let pos = if pos.batch == per_epoch && per_epoch > 0 {
            Position {
                epoch: pos.epoch.saturating_add(1),
                batch: 0,
            }
        } else {
            pos
        };
        if pos.epoch != self.pos.epoch {
            self.order = self.order_of(pos.epoch);
        }
        self.pos = pos;
        Ok(())
    }

    /// The next batch, across epoch boundaries; `None` only when an epoch holds no batch.
    pub fn next_batch(&mut self) -> Option<(Tensor, Tensor)> {
        let per_epoch = self.batches_per_epoch();
        if per_epoch == 0 {
            return None;
        }
        let start = self.pos.batch * self.batch_size;
        let end = (start + self.batch_size).min(self.len());
        let rows = &self.order[start..end];
        let batch = (gather_rows(&self.x, rows), gather_rows(&self.y, rows));
        let next = Position {
            batch: self.pos.batch + 1,
            ..self.pos
        };
        // Cannot fail: next.batch <= per_epoch.
        let _ = self.seek(next);
        Some(batch)
    }

    /// An iterator over the rest of the current epoch; when it is done, the
    /// position is the start of the next epoch.
    pub fn epoch(&mut self) -> Epoch<'_> {
        let epoch = self.pos.epoch;
        Epoch {
            batches: self,
            epoch,
        }
    }

    /// Keeps the position inside an epoch after the number of batches changed.
    fn clamp_position(&mut self) {
        let per_epoch = self.batches_per_epoch();
        if self.pos.batch >= per_epoch && per_epoch > 0 {
            let _ = self.seek(Position {
                epoch: self.pos.epoch,
                batch: per_epoch,
            });
        }
    }

    /// The example order of `epoch`: a permutation drawn from the seed, on a
    /// ChaCha stream of its own per epoch (so any epoch's order is found
    /// without drawing the earlier ones).
    fn order_of(&self, epoch: usize) -> Vec<usize> {
        let n = self.x.shape()[0];
        let mut order: Vec<usize> = (0..n).collect();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(if self.reshuffle { epoch as u64 } else { 0 });
            order.shuffle(&mut rng);
        }
        order
    }
}

impl Iterator for Batches {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<(Tensor, Tensor)> {
        self.next_batch()
    }
}

/// The rest of one epoch of a [`Batches`] (see [`Batches::epoch`]).
#[derive(Debug)]
pub struct Epoch<'a> {
    batches: &'a mut Batches,
    epoch: usize,
}

impl Iterator for Epoch<'_> {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<(Tensor, Tensor)> {
        if self.batches.pos.epoch != self.epoch {
            return None;
        }
        self.batches.next_batch()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.batches.pos.epoch == self.epoch {
            self.batches
                .batches_per_epoch()
                .saturating_sub(self.batches.pos.batch)
        } else {
            0
        };
        (left, Some(left))
    }
}

impl ExactSizeIterator for Epoch<'_> {}
