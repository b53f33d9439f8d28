//! Histograms without locks: a table of histograms that share their bucket bounds, kept in one
//! flat array of atomics. Observing is a bucket search over at most a few dozen integers and two
//! relaxed atomic additions; nothing is allocated and nothing is locked. (prometheus-client's
//! own `Histogram` takes a mutex per observation.)
//!
//! Values are kept as integers in a unit of the caller's choice (nanoseconds for durations,
//! entries for batch sizes), and scaled to the exposed unit (seconds, entries) when encoded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};

/// Bucket bounds of request and upstream durations, in seconds.
pub const DURATION_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Bucket bounds of the log's commit latency, in seconds (an fsync is 0.1 ms to tens of ms).
pub const COMMIT_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Bucket bounds of the log's batch sizes, in entries (the sequencer commits up to 4096).
pub const BATCH_BOUNDS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Bucket bounds of the time an approval waits for its end, in seconds.
pub const APPROVAL_BOUNDS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14_400.0, 86_400.0,
];

/// `rows` histograms over the same bounds.
#[derive(Debug)]
pub struct HistogramTable {
    /// The bounds in the stored unit, ascending.
    bounds: Box<[u64]>,
    /// The bounds as exposed.
    exposed: &'static [f64],
    /// One stored unit in the exposed unit (1e-9 for nanoseconds shown as seconds).
    scale: f64,
    /// Per row: one count per bound, then the overflow (+Inf) count, then the sum.
    cells: Box<[AtomicU64]>,
}

/// What one row holds at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub count: u64,
    pub sum: f64,
    /// Per bucket (not cumulative), the last one `+Inf`.
    pub buckets: Vec<(f64, u64)>,
}

impl HistogramTable {
    /// A table of `rows` histograms with `bounds` (in the exposed unit) for values observed in
    /// units of `scale` exposed units.
    pub fn new(rows: usize, bounds: &'static [f64], scale: f64) -> Self {
        let stride = bounds.len() + 2;
        Self {
            bounds: bounds
                .iter()
                // The float-to-integer cast saturates, which is what a bound wants.
                .map(|b| (b / scale).round() as u64)
                .collect(),
            exposed: bounds,
            scale,
            cells: (0..rows * stride).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A table of durations, observed in nanoseconds and shown in seconds.
    pub fn seconds(rows: usize, bounds: &'static [f64]) -> Self {
        Self::new(rows, bounds, 1e-9)
    }

    fn stride(&self) -> usize {
        self.bounds.len() + 2
    }

    pub fn rows(&self) -> usize {
        self.cells.len() / self.stride()
    }

    /// Adds `value` (in stored units) to row `row`. A row out of range is ignored.
    pub fn observe(&self, row: usize, value: u64) {
        let stride = self.stride();
        let Some(cells) = self.cells.get(row * stride..(row + 1) * stride) else {
            return;
        };
        let bucket = self.bounds.partition_point(|b| *b < value);
        cells[bucket].fetch_add(1, Ordering::Relaxed);
        cells[stride - 1].fetch_add(value, Ordering::Relaxed);
    }

    /// Adds a duration to row `row` of a table made with [`HistogramTable::seconds`].
    pub fn observe_duration(&self, row: usize, d: Duration) {
        self.observe(row, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// How many values row `row` holds (0 for a row out of range).
    pub fn count(&self, row: usize) -> u64 {
        let stride = self.stride();
        self.cells
            .get(row * stride..(row + 1) * stride - 1)
            .map_or(0, |c| c.iter().map(|a| a.load(Ordering::Relaxed)).sum())
    }

    /// Row `row` as it is now.
    pub fn snapshot(&self, row: usize) -> Snapshot {
        let stride = self.stride();
        let cells = &self.cells[row * stride..(row + 1) * stride];
        let mut buckets: Vec<(f64, u64)> = self
            .exposed
            .iter()
            .zip(cells)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        buckets.push((f64::INFINITY, cells[stride - 2].load(Ordering::Relaxed)));
        let sum = cells[stride - 1].load(Ordering::Relaxed) as f64 * self.scale;
        Snapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum,
            buckets,
        }
    }

    /// Encodes row `row` as one histogram series.
    pub fn encode(&self, row: usize, encoder: &mut MetricEncoder<'_>) -> std::fmt::Result {
        let s = self.snapshot(row);
        encoder.encode_histogram::<NoLabelSet>(s.sum, s.count, &s.buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let t = HistogramTable::new(2, &[1.0, 2.0, 4.0], 1.0);
        for v in [0, 1, 2, 3, 4, 5, 100] {
            t.observe(1, v);
        }
        let s = t.snapshot(1);
        assert_eq!(
            s.buckets,
            vec![(1.0, 2), (2.0, 1), (4.0, 2), (f64::INFINITY, 2)]
        );
        assert_eq!(s.count, 7);
        assert!((s.sum - 115.0).abs() < f64::EPSILON);
        assert_eq!(t.count(0), 0, "rows are apart");
        t.observe(9, 1);
        assert_eq!(t.count(1), 7, "a row out of range is ignored");
    }

    #[test]
    fn durations_are_kept_in_nanoseconds_and_shown_in_seconds() {
        let t = HistogramTable::seconds(1, DURATION_BOUNDS);
        t.observe_duration(0, Duration::from_millis(3));
        t.observe_duration(0, Duration::from_secs(1));
        let s = t.snapshot(0);
        assert!((s.sum - 1.003).abs() < 1e-9, "{}", s.sum);
        let le = |bound: f64| s.buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(le(0.005), 1, "3 ms is at most 5 ms");
        assert_eq!(le(1.0), 1, "1 s is at most 1 s (le is inclusive)");
    }
}
