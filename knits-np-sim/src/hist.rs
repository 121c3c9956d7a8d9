//! A log-linear histogram of cycle counts, for means and percentiles without keeping samples.

/// Values below this are counted exactly.
const LINEAR: u64 = 256;
/// Sub-buckets per power of two above [`LINEAR`] (relative error below 1/32).
const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
/// Values from 2^MAX_EXP up share the last bucket (kept small so the histograms stay in cache).
const MAX_EXP: u32 = 40;
const BUCKETS: usize = LINEAR as usize + (MAX_EXP as usize - 8) * SUB;

/// Counts of `u64` values in log-linear buckets.
#[derive(Debug, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    sum: f64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            n: 0,
            sum: 0.0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < LINEAR {
        v as usize
    } else {
        let e = 63 - v.leading_zeros(); // >= 8
        if e >= MAX_EXP {
            return BUCKETS - 1;
        }
        let sub = ((v >> (e - SUB_BITS)) as usize) & (SUB - 1);
        LINEAR as usize + (e as usize - 8) * SUB + sub
    }
}

fn lower_bound(i: usize) -> u64 {
    if i < LINEAR as usize {
        i as u64
    } else {
        let j = i - LINEAR as usize;
        let e = (j / SUB) as u32 + 8;
        let sub = (j % SUB) as u64;
        (1u64 << e) | (sub << (e - SUB_BITS))
    }
}

impl Hist {
    /// Adds one value.
    #[inline]
    pub fn add(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.n += 1;
        self.sum += v as f64;
        self.max = self.max.max(v);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Exact mean.
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum / self.n as f64
        }
    }

    /// The `q` quantile (0..=1), as the lower bound of its bucket (exact below 256).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return lower_bound(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_and_quantiles() {
        for v in [
            0u64,
            1,
            255,
            256,
            257,
            1000,
            123_456,
            u32::MAX as u64,
            (1 << 40) - 1,
        ] {
            let lb = lower_bound(index(v));
            assert!(lb <= v && v - lb <= v / 32 + 1, "{v} -> {lb}");
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        let mut h = Hist::default();
        for v in 1..=100 {
            h.add(v);
        }
        assert_eq!(h.quantile(0.99), 99);
        assert_eq!(h.quantile(0.5), 50);
        assert_eq!(h.mean(), 50.5);
    }
}
