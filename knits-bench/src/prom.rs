//! The proxy's hand-off latency histogram (`knits_proxy_handoff_latency_seconds`, Prometheus
//! text from `knits-proxy --metrics`) and the pool counters: parsed, subtracted, summarised.

/// The proxy metrics this study reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyMetrics {
    /// Cumulative bucket counts by upper bound (seconds), as printed (ascending).
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum: f64,
    /// Hand-offs accepted.
    pub accepted: u64,
    /// Hand-offs that took a pooled new leg.
    pub pool_hits: u64,
    /// Hand-offs that connected a new leg.
    pub pool_misses: u64,
}

const H: &str = "knits_proxy_handoff_latency_seconds";

/// Parses the metrics text. Missing series stay 0 (an empty histogram).
pub fn parse(text: &str) -> ProxyMetrics {
    let mut m = ProxyMetrics::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let v: f64 = match value.trim().parse() {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(rest) = name.strip_prefix(H) {
            if let Some(le) = rest
                .strip_prefix("_bucket{le=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            {
                if le != "+Inf"
                    && let Ok(b) = le.parse::<f64>()
                {
                    m.buckets.push((b, v as u64));
                }
            } else if rest == "_sum" {
                m.sum = v;
            } else if rest == "_count" {
                m.count = v as u64;
            }
        } else {
            match name {
                "knits_proxy_handoffs_accepted_total" => m.accepted = v as u64,
                "knits_proxy_c2_pool_hits_total" => m.pool_hits = v as u64,
                "knits_proxy_c2_pool_misses_total" => m.pool_misses = v as u64,
                _ => {}
            }
        }
    }
    m.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    m
}

impl ProxyMetrics {
    /// What happened between `earlier` and `self` (bucket bounds must match; unmatched ones
    /// count from 0).
    pub fn since(&self, earlier: &ProxyMetrics) -> ProxyMetrics {
        let before = |b: f64| {
            earlier
                .buckets
                .iter()
                .find(|(e, _)| *e == b)
                .map_or(0, |(_, n)| *n)
        };
        ProxyMetrics {
            buckets: self
                .buckets
                .iter()
                .map(|&(b, n)| (b, n.saturating_sub(before(b))))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum: (self.sum - earlier.sum).max(0.0),
            accepted: self.accepted.saturating_sub(earlier.accepted),
            pool_hits: self.pool_hits.saturating_sub(earlier.pool_hits),
            pool_misses: self.pool_misses.saturating_sub(earlier.pool_misses),
        }
    }

    /// Mean observation in microseconds (NaN when there is none).
    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64 * 1e6
        }
    }

    /// The `q` quantile in microseconds, interpolated linearly inside its bucket as
    /// Prometheus' `histogram_quantile` does (the lowest bucket starts at 0). NaN when empty;
    /// the highest finite bound when the quantile lies beyond it.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 || self.buckets.is_empty() {
            return f64::NAN;
        }
        let rank = q * self.count as f64;
        let (mut lo_b, mut lo_n) = (0.0, 0u64);
        for &(b, n) in &self.buckets {
            if n as f64 >= rank {
                let inside = (n - lo_n) as f64;
                let frac = if inside == 0.0 {
                    1.0
                } else {
                    (rank - lo_n as f64) / inside
                };
                return (lo_b + (b - lo_b) * frac) * 1e6;
            }
            (lo_b, lo_n) = (b, n);
        }
        lo_b * 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[(f64, u64)], count: u64, sum: f64, hits: u64) -> String {
        let mut s =
            String::from("# HELP x\n# TYPE knits_proxy_handoff_latency_seconds histogram\n");
        for (le, n) in b {
            s += &format!("knits_proxy_handoff_latency_seconds_bucket{{le=\"{le}\"}} {n}\n");
        }
        s += &format!("knits_proxy_handoff_latency_seconds_bucket{{le=\"+Inf\"}} {count}\n");
        s += &format!("knits_proxy_handoff_latency_seconds_sum {sum}\n");
        s += &format!("knits_proxy_handoff_latency_seconds_count {count}\n");
        s +=
            &format!("knits_proxy_c2_pool_hits_total {hits}\nknits_proxy_c2_pool_misses_total 1\n");
        s += "knits_proxy_handoffs_accepted_total 7\nknits_proxy_handoffs_failed_total{reason=\"x\"} 3\n";
        s
    }

    #[test]
    fn parses_the_proxy_text() {
        let m = parse(&text(
            &[(0.00005, 0), (0.0001, 2), (0.00025, 4)],
            4,
            0.0005,
            3,
        ));
        assert_eq!(m.buckets, [(0.00005, 0), (0.0001, 2), (0.00025, 4)]);
        assert_eq!(
            (m.count, m.accepted, m.pool_hits, m.pool_misses),
            (4, 7, 3, 1)
        );
        assert!((m.mean_us() - 125.0).abs() < 1e-9);
    }

    #[test]
    fn deltas_and_quantiles() {
        let a = parse(&text(
            &[(0.0001, 10), (0.00025, 10), (0.0005, 10)],
            10,
            0.001,
            0,
        ));
        let b = parse(&text(
            &[(0.0001, 10), (0.00025, 30), (0.0005, 40)],
            40,
            0.007,
            5,
        ));
        let d = b.since(&a);
        assert_eq!(d.count, 30);
        assert_eq!(d.buckets, [(0.0001, 0), (0.00025, 20), (0.0005, 30)]);
        assert!((d.mean_us() - 200.0).abs() < 1e-6);
        // Rank 15 of 30 lies 15/20 into (100, 250] µs.
        assert!(
            (d.quantile_us(0.5) - 212.5).abs() < 1e-6,
            "{}",
            d.quantile_us(0.5)
        );
        // Rank 29.7 lies in (250, 500]: 9.7/10 of the way.
        assert!((d.quantile_us(0.99) - 492.5).abs() < 1e-6);
        assert!(ProxyMetrics::default().quantile_us(0.5).is_nan());
        assert!(ProxyMetrics::default().mean_us().is_nan());
    }

    #[test]
    fn beyond_the_last_bound() {
        let m = parse(&text(&[(0.0001, 1)], 3, 1.0, 0));
        assert!((m.quantile_us(0.99) - 100.0).abs() < 1e-6);
    }
}
