//! Histograms of cycle counts for means and percentiles without keeping samples: `hdrhistogram`
//! with two significant digits (exact below 256, within 1/128 above), plus the exact sum, so
//! means stay exact rather than bucket midpoints.
//!
//! A quantile is reported as the lower bound of its bucket, capped at the largest value seen, as
//! the hand-written log-linear histogram this replaced did; that one had 32 buckets per power of
//! two above 256, so a 99th percentile above 256 cycles now comes out up to 1/32 higher or lower
//! than before (finer, not different work).

use hdrhistogram::Histogram;

/// Counts of `u64` values.
#[derive(Debug, Clone)]
pub struct Hist {
    h: Histogram<u64>,
    sum: f64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            // Auto-resizing: two significant digits over any range never fails to build.
            h: Histogram::new(2).expect("2 significant digits is in 0..=5"),
            sum: 0.0,
            max: 0,
        }
    }
}

impl Hist {
    /// Adds one value.
    #[inline]
    pub fn add(&mut self, v: u64) {
        // Grows to fit; only a value past what a u64 histogram can index is clamped.
        if self.h.record(v).is_err() {
            self.h.saturating_record(v);
        }
        self.sum += v as f64;
        self.max = self.max.max(v);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    /// Exact mean.
    pub fn mean(&self) -> f64 {
        if self.h.is_empty() {
            0.0
        } else {
            self.sum / self.h.len() as f64
        }
    }

    /// The `q` quantile (0..=1), as the lower bound of its bucket (exact below 256).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.h.is_empty() {
            return 0;
        }
        let v = self.h.value_at_quantile(q.clamp(0.0, 1.0));
        self.h.lowest_equivalent(v).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_exact_below_256_and_within_a_bucket_above() {
        let mut h = Hist::default();
        for v in 1..=100 {
            h.add(v);
        }
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.mean(), 50.5);
        assert_eq!(h.count(), 100);
        for v in [256u64, 257, 1000, 123_456, u32::MAX as u64, (1 << 40) - 1] {
            let mut h = Hist::default();
            h.add(v);
            let q = h.quantile(0.5);
            assert!(q <= v && v - q <= v / 128 + 1, "{v} -> {q}");
            assert_eq!(h.mean(), v as f64);
        }
        assert_eq!(Hist::default().quantile(0.99), 0);
    }
}
