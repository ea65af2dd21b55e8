//! [`RowBalancer`]: splits each global batch across the ranks in proportion
//! to how fast each rank computed its rows on the last steps, so that a
//! rank on a slower core gets fewer rows and the others do not wait for it.
//!
//! Why: every step ends in the gradient allreduce, which waits for the
//! slowest rank. On the 2-vCPU machine one core was often slower than the
//! other for a whole run: the two ranks took 51 and 40 ms a step on their
//! equal shares, so every step waited about 11 ms for the slower one
//! (`docs/distributed.md`, "Balanced shares"). The split only
//! moves rows between ranks: the global batch, its order and the weight of
//! each row in the averaged gradient are unchanged (each rank's gradient is
//! weighted by its share), so the step is the same one up to rounding; but
//! the rounding, and with per-rank batch norm the statistics, then depend on
//! timing, so repeated runs no longer give the same bits. That is why it is
//! opt-in ([`Distributed::set_balance`](crate::distributed::Distributed::set_balance)).
//!
//! The logic here is pure (no MPI): every rank feeds it the same times (one
//! allreduce of one value per rank) and so computes the same split.

/// Smoothing of the speed estimates: the weight of the newest step's speed.
/// Speeds change in phases of seconds (tens of steps), so a short memory
/// follows them; 0.5 rather than 1 so that one slow step (a page fault, an
/// interrupt) does not swing the split.
const SMOOTHING: f64 = 0.5;

/// The per-rank speed estimates (rows per second) and the split they give.
#[derive(Debug, Clone)]
pub struct RowBalancer {
    /// Rows per second of each rank, smoothed; `None` before the first step.
    speeds: Option<Vec<f64>>,
    ranks: usize,
}

impl RowBalancer {
    /// A balancer for `ranks` ranks (at least 1), which splits evenly until
    /// it has a measurement.
    pub fn new(ranks: usize) -> Self {
        RowBalancer {
            speeds: None,
            ranks: ranks.max(1),
        }
    }

    /// Records one step: rank `r` computed `rows[r]` rows in `seconds[r]`.
    /// Ranks with no rows or no time keep their estimate.
    pub fn record(&mut self, rows: &[usize], seconds: &[f64]) {
        let speeds = self.speeds.get_or_insert_with(|| vec![0.0; self.ranks]);
        for ((s, &n), &t) in speeds.iter_mut().zip(rows).zip(seconds) {
            if n == 0 || !(t > 0.0 && t.is_finite()) {
                continue;
            }
            let now = n as f64 / t;
            *s = if *s > 0.0 {
                SMOOTHING * now + (1.0 - SMOOTHING) * *s
            } else {
                now
            };
        }
    }

    /// The rows each rank takes of a global batch of `global` rows (at least
    /// one each when `global >= ranks`): proportional to the speeds, rounded
    /// by largest remainder (ties to the lower rank), evenly before the first
    /// measurement. The same inputs give the same split on every rank.
    pub fn split(&self, global: usize) -> Vec<usize> {
        let n = self.ranks;
        let even = || {
            (0..n)
                .map(|r| (r + 1) * global / n - r * global / n)
                .collect()
        };
        let Some(speeds) = &self.speeds else {
            return even();
        };
        let total: f64 = speeds.iter().sum();
        if global < n || !(total > 0.0 && total.is_finite()) || speeds.iter().any(|&s| s <= 0.0) {
            return even();
        }
        let ideal: Vec<f64> = speeds.iter().map(|s| global as f64 * s / total).collect();
        let mut rows: Vec<usize> = ideal.iter().map(|v| (v.floor() as usize).max(1)).collect();
        // Rows left over go to the ranks furthest below their ideal; rows
        // over (from the one-row minimum) come from the ranks furthest above.
        let behind = |rows: &[usize], r: usize| ideal[r] - rows[r] as f64;
        while rows.iter().sum::<usize>() < global {
            let r = (0..n)
                .max_by(|&a, &b| {
                    behind(&rows, a)
                        .total_cmp(&behind(&rows, b))
                        .then(b.cmp(&a))
                })
                .unwrap_or(0);
            rows[r] += 1;
        }
        while rows.iter().sum::<usize>() > global {
            let r = (0..n)
                .filter(|&r| rows[r] > 1)
                .min_by(|&a, &b| {
                    behind(&rows, a)
                        .total_cmp(&behind(&rows, b))
                        .then(a.cmp(&b))
                })
                .unwrap_or(0);
            rows[r] -= 1;
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_before_any_measurement() {
        let b = RowBalancer::new(3);
        assert_eq!(b.split(50), vec![16, 17, 17]);
    }

    #[test]
    fn faster_rank_gets_more_rows() {
        let mut b = RowBalancer::new(2);
        // Rank 0 did 25 rows in 36 ms, rank 1 in 48 ms.
        b.record(&[25, 25], &[0.036, 0.048]);
        let rows = b.split(50);
        assert_eq!(rows.iter().sum::<usize>(), 50);
        assert_eq!(rows, vec![29, 21]);
    }

    #[test]
    fn smooths_one_slow_step() {
        let mut b = RowBalancer::new(2);
        b.record(&[25, 25], &[0.040, 0.040]);
        b.record(&[25, 25], &[0.080, 0.040]);
        // Speeds 625·0.5 + 312.5·0.5 = 468.75 and 625: 21/29, not 17/33.
        assert_eq!(b.split(50), vec![21, 29]);
    }

    #[test]
    fn every_rank_keeps_a_row() {
        let mut b = RowBalancer::new(3);
        b.record(&[1, 1, 1], &[1.0, 1e-6, 1e-6]);
        let rows = b.split(4);
        assert!(rows.iter().all(|&r| r >= 1), "{rows:?}");
        assert_eq!(rows.iter().sum::<usize>(), 4);
        // Fewer rows than ranks: the even split (the caller reports the error).
        assert_eq!(b.split(2).iter().sum::<usize>(), 2);
    }

    #[test]
    fn ignores_bad_times() {
        let mut b = RowBalancer::new(2);
        b.record(&[25, 25], &[f64::NAN, 0.0]);
        assert_eq!(b.split(10), vec![5, 5]);
    }
}
