//! The proxies' hand-off histograms and pool counters (Prometheus text from
//! `knits-proxy --metrics`): parsed, subtracted between two scrapes, added over the nodes,
//! summarised.
//!
//! Two histograms are read: `knits_proxy_handoff_latency_seconds` (decision to the switch's
//! acceptance, one interval) and `knits_proxy_handoff_phase_seconds{phase=...}`, one per
//! [`HandoffPhase`]: `unacked` (the client acknowledging the node's own bytes), `leg` (opening
//! the new leg or taking it from the pool), `control` (the switch's answer), `forward` (the
//! request bytes already read written onto the new leg).

use knits_proxy::metrics::HandoffPhase;

/// One histogram: cumulative bucket counts, count and sum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist {
    /// Cumulative bucket counts by upper bound (seconds), ascending, without `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum: f64,
}

impl Hist {
    /// What happened between `earlier` and `self` (a bound missing from `earlier` counts from
    /// 0; a counter that went backwards, a restarted proxy, gives 0).
    pub fn since(&self, earlier: &Hist) -> Hist {
        let before = |b: f64| {
            earlier
                .buckets
                .iter()
                .find(|(e, _)| *e == b)
                .map_or(0, |(_, n)| *n)
        };
        Hist {
            buckets: self
                .buckets
                .iter()
                .map(|&(b, n)| (b, n.saturating_sub(before(b))))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }

    /// The observations of `self` and `other` together (several nodes' proxies).
    pub fn plus(&self, other: &Hist) -> Hist {
        let mut buckets = self.buckets.clone();
        for &(b, n) in &other.buckets {
            match buckets.iter_mut().find(|(e, _)| *e == b) {
                Some((_, m)) => *m += n,
                None => buckets.push((b, n)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Hist {
            buckets,
            count: self.count + other.count,
            sum: self.sum + other.sum,
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
    /// the highest finite bound when the quantile lies beyond it. An estimate: the proxy's
    /// buckets are 50, 100, 250, 500 µs, ... wide.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.count == 0 || self.buckets.is_empty() {
            return f64::NAN;
        }
        let rank = q * self.count as f64;
        let (mut lo_b, mut lo_n) = (0.0, 0u64);
        for &(b, n) in &self.buckets {
            if n as f64 >= rank {
                let inside = n.saturating_sub(lo_n) as f64;
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

impl Hist {
    /// [`Hist::quantile_us`] for a table: `≤ 50` when the quantile lies in the lowest bucket,
    /// where interpolation would only restate the bucket's middle; `-` when empty.
    pub fn quantile_label(&self, q: f64) -> String {
        let v = self.quantile_us(q);
        match self.buckets.first() {
            _ if v.is_nan() => "-".into(),
            Some(&(b, _)) if v <= b * 1e6 => format!("≤ {}", crate::numfmt::num(b * 1e6)),
            _ => crate::numfmt::num(v),
        }
    }
}

/// The proxy metrics this study reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxyMetrics {
    /// Decision to the switch's acceptance.
    pub latency: Hist,
    /// Per [`HandoffPhase`], in `HandoffPhase::ALL` order.
    pub phases: [Hist; 4],
    /// Hand-offs accepted.
    pub accepted: u64,
    /// Hand-offs that took a pooled new leg.
    pub pool_hits: u64,
    /// Hand-offs that connected a new leg.
    pub pool_misses: u64,
}

const LATENCY: &str = "knits_proxy_handoff_latency_seconds";
const PHASE: &str = "knits_proxy_handoff_phase_seconds";

/// A sample's labels: (name, value) pairs.
type Labels<'a> = Vec<(&'a str, &'a str)>;

/// One sample line: metric name, labels, value. `None` for comments and lines that are not
/// samples.
fn sample(line: &str) -> Option<(&str, Labels<'_>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        None => (head.trim(), Vec::new()),
        Some((n, rest)) => {
            let body = rest.trim_end().strip_suffix('}')?;
            let labels = body
                .split(',')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.trim(), v.trim().strip_prefix('"')?.strip_suffix('"')?))
                })
                .collect();
            (n.trim(), labels)
        }
    };
    Some((name, labels, value))
}

fn label<'a>(labels: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Adds one histogram sample (`_bucket`, `_sum` or `_count` of `base`) to `h`.
fn hist_sample(h: &mut Hist, suffix: &str, labels: &[(&str, &str)], v: f64) {
    match suffix {
        "_bucket" => {
            if let Some(le) = label(labels, "le")
                && le != "+Inf"
                && let Ok(b) = le.parse::<f64>()
            {
                h.buckets.push((b, v as u64));
            }
        }
        "_sum" => h.sum = v,
        "_count" => h.count = v as u64,
        _ => {}
    }
}

/// Parses the metrics text. Missing series stay 0 (an empty histogram); unknown phases are
/// ignored.
pub fn parse(text: &str) -> ProxyMetrics {
    let mut m = ProxyMetrics::default();
    for (name, labels, v) in text.lines().filter_map(sample) {
        if let Some(suffix) = name.strip_prefix(LATENCY) {
            hist_sample(&mut m.latency, suffix, &labels, v);
        } else if let Some(suffix) = name.strip_prefix(PHASE) {
            let i = label(&labels, "phase")
                .and_then(|p| HandoffPhase::ALL.iter().position(|h| h.name() == p));
            if let Some(i) = i {
                hist_sample(&mut m.phases[i], suffix, &labels, v);
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
    for h in std::iter::once(&mut m.latency).chain(m.phases.iter_mut()) {
        h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    m
}

impl ProxyMetrics {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &ProxyMetrics) -> ProxyMetrics {
        ProxyMetrics {
            latency: self.latency.since(&earlier.latency),
            phases: std::array::from_fn(|i| self.phases[i].since(&earlier.phases[i])),
            accepted: self.accepted.saturating_sub(earlier.accepted),
            pool_hits: self.pool_hits.saturating_sub(earlier.pool_hits),
            pool_misses: self.pool_misses.saturating_sub(earlier.pool_misses),
        }
    }

    /// `self` and `other` together (the proxies of several nodes).
    pub fn plus(&self, other: &ProxyMetrics) -> ProxyMetrics {
        ProxyMetrics {
            latency: self.latency.plus(&other.latency),
            phases: std::array::from_fn(|i| self.phases[i].plus(&other.phases[i])),
            accepted: self.accepted + other.accepted,
            pool_hits: self.pool_hits + other.pool_hits,
            pool_misses: self.pool_misses + other.pool_misses,
        }
    }

    /// The histogram of `p`.
    pub fn phase(&self, p: HandoffPhase) -> &Hist {
        &self.phases[p as usize]
    }

    /// Sum of the phases' means, µs: the proxy's whole share of a hand-off as it measures it
    /// (NaN when a phase saw nothing).
    pub fn phases_mean_us(&self) -> f64 {
        self.phases.iter().map(Hist::mean_us).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_text(name: &str, label: &str, b: &[(f64, u64)], count: u64, sum: f64) -> String {
        let mut s = format!("# TYPE {name} histogram\n");
        for (le, n) in b {
            s += &format!("{name}_bucket{{{label}le=\"{le}\"}} {n}\n");
        }
        s += &format!("{name}_bucket{{{label}le=\"+Inf\"}} {count}\n");
        let l = label.trim_end_matches(',');
        let l = if l.is_empty() {
            String::new()
        } else {
            format!("{{{l}}}")
        };
        s += &format!("{name}_sum{l} {sum}\n{name}_count{l} {count}\n");
        s
    }

    fn text(b: &[(f64, u64)], count: u64, sum: f64, hits: u64) -> String {
        let mut s = String::from("# HELP x\n");
        s += &hist_text(LATENCY, "", b, count, sum);
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
        assert_eq!(m.latency.buckets, [(0.00005, 0), (0.0001, 2), (0.00025, 4)]);
        assert_eq!(
            (m.latency.count, m.accepted, m.pool_hits, m.pool_misses),
            (4, 7, 3, 1)
        );
        assert!((m.latency.mean_us() - 125.0).abs() < 1e-9);
        assert!(m.phases.iter().all(|h| h.count == 0));
    }

    #[test]
    fn parses_the_phase_histograms() {
        let mut t = String::new();
        t += &hist_text(PHASE, "phase=\"unacked\",", &[(0.00005, 5)], 5, 0.00001);
        t += &hist_text(
            PHASE,
            "phase=\"leg\",",
            &[(0.00005, 1), (0.0001, 5)],
            5,
            0.0003,
        );
        t += &hist_text(PHASE, "phase=\"control\",", &[(0.0001, 4)], 5, 0.0002);
        t += &hist_text(PHASE, "phase=\"forward\",", &[(0.00005, 5)], 5, 0.00005);
        t += &hist_text(PHASE, "phase=\"later\",", &[(0.00005, 9)], 9, 9.0);
        let m = parse(&t);
        let us = |p| m.phase(p).mean_us();
        assert!((us(HandoffPhase::Unacked) - 2.0).abs() < 1e-9);
        assert!((us(HandoffPhase::Leg) - 60.0).abs() < 1e-9);
        assert!((us(HandoffPhase::Control) - 40.0).abs() < 1e-9);
        assert!((us(HandoffPhase::Forward) - 10.0).abs() < 1e-9);
        assert!((m.phases_mean_us() - 112.0).abs() < 1e-9);
        assert_eq!(
            m.phase(HandoffPhase::Leg).buckets,
            [(0.00005, 1), (0.0001, 5)]
        );
        // Rank 2.5 of 5 lies 1.5/4 into (50, 100] µs.
        assert!((m.phase(HandoffPhase::Leg).quantile_us(0.5) - 68.75).abs() < 1e-9);
        assert_eq!(m.latency, Hist::default(), "phases are not the latency");
    }

    #[test]
    fn the_real_renderer_is_understood() {
        // The proxy's own renderer, so a change of its format breaks this test.
        let pm = knits_proxy::metrics::Metrics::new();
        for (p, us) in [
            (HandoffPhase::Unacked, 3),
            (HandoffPhase::Leg, 70),
            (HandoffPhase::Control, 30),
            (HandoffPhase::Forward, 8),
        ] {
            pm.handoff_phases[p as usize].observe(std::time::Duration::from_micros(us));
        }
        pm.handoff_latency
            .observe(std::time::Duration::from_micros(103));
        let m = parse(&pm.render());
        assert_eq!(m.latency.count, 1);
        assert!((m.latency.mean_us() - 103.0).abs() < 1e-6);
        for (p, us) in [(HandoffPhase::Leg, 70.0), (HandoffPhase::Forward, 8.0)] {
            assert_eq!(m.phase(p).count, 1, "{p:?}");
            assert!((m.phase(p).mean_us() - us).abs() < 1e-6, "{p:?}");
        }
        assert_eq!(m.phase(HandoffPhase::Leg).buckets[1], (0.0001, 1));
    }

    #[test]
    fn deltas_sums_and_quantiles() {
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
        assert_eq!(d.latency.count, 30);
        assert_eq!(
            d.latency.buckets,
            [(0.0001, 0), (0.00025, 20), (0.0005, 30)]
        );
        assert!((d.latency.mean_us() - 200.0).abs() < 1e-6);
        // Rank 15 of 30 lies 15/20 into (100, 250] µs.
        assert!((d.latency.quantile_us(0.5) - 212.5).abs() < 1e-6);
        // Rank 29.7 lies in (250, 500]: 9.7/10 of the way.
        assert!((d.latency.quantile_us(0.99) - 492.5).abs() < 1e-6);
        assert!(Hist::default().quantile_us(0.5).is_nan());
        assert_eq!(d.latency.quantile_label(0.5), "213");
        assert_eq!(a.latency.quantile_label(0.5), "≤ 100");
        assert_eq!(Hist::default().quantile_label(0.5), "-");
        assert!(Hist::default().mean_us().is_nan());
        // Two nodes: counts and buckets add, the mean is the pooled one.
        let two = d.plus(&a);
        assert_eq!(two.latency.count, 40);
        assert_eq!(
            two.latency.buckets,
            [(0.0001, 10), (0.00025, 30), (0.0005, 40)]
        );
        assert!((two.latency.mean_us() - 175.0).abs() < 1e-6);
        assert_eq!((two.accepted, two.pool_hits), (7, 5));
        // A restarted proxy does not give negative counts.
        assert_eq!(a.since(&b).latency.count, 0);
    }

    #[test]
    fn beyond_the_last_bound() {
        let m = parse(&text(&[(0.0001, 1)], 3, 1.0, 0));
        assert!((m.latency.quantile_us(0.99) - 100.0).abs() < 1e-6);
    }
}
