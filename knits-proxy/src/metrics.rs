//! Proxy metrics: counters and the hand-off latency histograms, encoded by `prometheus-client`
//! (OpenMetrics text) and served on a local address when asked.
//!
//! The counters are plain atomics, bumped on the request path without a lock; at a scrape they
//! are read into constant metrics ([`Family`]) that a `prometheus-client` collector encodes. The
//! families, their names and their labels are this module's; the text format is the crate's.
//! A counter family is declared without `_total` and its samples carry it
//! (`knits_proxy_connections_accepted_total`, as before the crate was used). The histogram
//! keeps its own fixed buckets (atomics, no lock), and is encoded through the crate's histogram
//! encoder. The responder is the proxy's own HTTP framing: the crate has no server, and the
//! proxy needs no second HTTP stack for one `GET`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use knits_core::wire::control::ReplyCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::conn::{Conn, ReadHead};
use crate::framing::{Limits, parse_request};
use knits_core::named_enum;

named_enum! {
    /// Why a hand-off did not happen although the switch did not refuse it.
    pub enum FailReason {
        /// The switch did not answer within the total time allowed.
        Timeout = "timeout",
        /// The node's responses on the held connection were not all acknowledged in time.
        Unacked = "unacked",
        /// The new leg to the target could not be opened.
        Connect = "connect",
        /// The held connection's MSS could not be read, or the new leg's could not be set.
        Mss = "mss",
        /// An endpoint is not IPv4 (the control protocol carries IPv4 only).
        NotIpv4 = "not_ipv4",
        /// The target is not among the configured peers.
        UnknownPeer = "unknown_peer",
        /// The control message could not be sent.
        Send = "send",
        /// After the switch accepted, the new leg was reset before the held connection ended:
        /// the switch rolled the hand-off back; the request was served locally.
        RolledBack = "rolled_back",
        /// After the switch accepted, forwarding failed in a way that cannot be recovered (the
        /// connection is lost).
        Broken = "broken",
    }
}

/// Upper bounds of the hand-off latency buckets, in microseconds.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = LATENCY_BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Sum of all observations.
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us.load(Relaxed))
    }

    /// Cumulative count per bucket bound (Prometheus `le` semantics).
    pub fn cumulative(&self) -> Vec<(u64, u64)> {
        let mut acc = 0;
        LATENCY_BUCKETS_US
            .iter()
            .zip(&self.buckets)
            .map(|(&b, c)| {
                acc += c.load(Relaxed);
                (b, acc)
            })
            .collect()
    }

    /// The counts now, for encoding.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS_US
            .iter()
            .zip(&self.buckets)
            .map(|(&b, c)| (b as f64 / 1e6, c.load(Relaxed)))
            .collect();
        let count = self.count();
        let inside: u64 = buckets.iter().map(|(_, n)| n).sum();
        buckets.push((f64::INFINITY, count.saturating_sub(inside)));
        HistogramSnapshot {
            buckets,
            count,
            sum: self.sum().as_secs_f64(),
        }
    }

    /// The smallest bucket bound that holds at least `q` (0..=1) of the observations.
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let want = (q * n as f64).ceil() as u64;
        self.cumulative()
            .into_iter()
            .find(|&(_, c)| c >= want)
            .map(|(b, _)| b)
    }
}

/// One histogram's counts at a scrape: per bucket (upper bound in seconds, the last `+Inf`;
/// not cumulative), count and sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

impl EncodeMetric for HistogramSnapshot {
    fn encode(&self, mut e: MetricEncoder) -> fmt::Result {
        e.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

named_enum! {
    /// The phases of a hand-off on the node that gives the connection away, in order.
    pub enum HandoffPhase {
        /// Waiting until the client has acknowledged everything this node sent on c1.
        Unacked = "unacked",
        /// Opening the new leg c2 (or taking it from the pool).
        Leg = "leg",
        /// The control round trip to the switch (with any retries) until its acceptance.
        Control = "control",
        /// Writing the request bytes already read from c1 onto c2, after the acceptance.
        Forward = "forward",
    }
}

/// Everything the proxy counts. Fields are public for tests and embedding; all are monotonic
/// except `connections_open`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Client connections accepted.
    pub connections_accepted: AtomicU64,
    /// Client connections open now.
    pub connections_open: AtomicU64,
    /// Requests served through the local upstream.
    pub requests_local: AtomicU64,
    /// Requests answered 400.
    pub requests_bad: AtomicU64,
    /// Requests answered 431.
    pub requests_too_large: AtomicU64,
    /// Requests answered 501.
    pub requests_unsupported: AtomicU64,
    /// Requests that failed on the upstream side (502/504 or a broken response).
    pub upstream_errors: AtomicU64,
    /// Upstream connections opened.
    pub upstream_connects: AtomicU64,
    /// Hand-offs started (a request for a peer was decided).
    pub handoffs_initiated: AtomicU64,
    /// Hand-offs the switch accepted.
    pub handoffs_accepted: AtomicU64,
    /// Hand-offs the switch refused, by reply code.
    pub handoffs_refused: [AtomicU64; ReplyCode::COUNT],
    /// Hand-offs that failed on this node, by reason.
    pub handoffs_failed: [AtomicU64; FailReason::COUNT],
    /// Time from the decision to the switch's acceptance.
    pub handoff_latency: Histogram,
    /// The hand-off's phases, indexed by [`HandoffPhase`]: where its latency goes.
    pub handoff_phases: [Histogram; HandoffPhase::COUNT],
    /// Control requests sent again because no reply came in time.
    pub control_retransmits: AtomicU64,
    /// Control datagrams ignored (wrong source, malformed, bad tag, unknown counter).
    pub control_ignored: AtomicU64,
    /// Hand-offs whose new leg came from the pre-connected pool.
    pub c2_pool_hits: AtomicU64,
    /// Hand-offs that had to connect the new leg.
    pub c2_pool_misses: AtomicU64,
    /// New legs of refused hand-offs given back to the pool unused.
    pub c2_pool_returned: AtomicU64,
    /// The TLS listener's counters.
    pub tls: crate::tls::TlsMetrics,
}

impl Metrics {
    /// A fresh, shareable set of metrics.
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Counts a switch refusal.
    pub fn refused(&self, code: ReplyCode) {
        self.handoffs_refused[code.index()].fetch_add(1, Relaxed);
    }

    /// Counts a local hand-off failure.
    pub fn failed(&self, reason: FailReason) {
        self.handoffs_failed[reason.index()].fetch_add(1, Relaxed);
    }

    /// Refusals with `code` so far.
    pub fn refused_count(&self, code: ReplyCode) -> u64 {
        self.handoffs_refused[code.index()].load(Relaxed)
    }

    /// Failures for `reason` so far.
    pub fn failed_count(&self, reason: FailReason) -> u64 {
        self.handoffs_failed[reason.index()].load(Relaxed)
    }

    /// The OpenMetrics text exposition of every metric (see [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        encode("knits_proxy", self.families())
    }

    /// Every family, in the order they are written.
    fn families(&self) -> Vec<Family> {
        let v = |a: &AtomicU64| a.load(Relaxed);
        let mut f = vec![
            Family::counter(
                "connections_accepted",
                "Client connections accepted.",
                one(v(&self.connections_accepted)),
            ),
            Family::gauge(
                "connections_open",
                "Client connections open now.",
                one(v(&self.connections_open)),
            ),
            Family::counter(
                "requests_local",
                "Requests served by the local upstream.",
                one(v(&self.requests_local)),
            ),
            Family::counter(
                "requests_rejected",
                "Requests answered with an error by the proxy.",
                [
                    ("400", &self.requests_bad),
                    ("431", &self.requests_too_large),
                    ("501", &self.requests_unsupported),
                ]
                .into_iter()
                .map(|(status, n)| (vec![("status", status.to_string())], v(n)))
                .collect(),
            ),
            Family::counter(
                "upstream_errors",
                "Requests that failed on the upstream side.",
                one(v(&self.upstream_errors)),
            ),
            Family::counter(
                "upstream_connects",
                "Upstream connections opened.",
                one(v(&self.upstream_connects)),
            ),
            Family::counter(
                "handoffs_initiated",
                "Hand-offs started.",
                one(v(&self.handoffs_initiated)),
            ),
            Family::counter(
                "handoffs_accepted",
                "Hand-offs the switch accepted.",
                one(v(&self.handoffs_accepted)),
            ),
            Family::counter(
                "handoffs_refused",
                "Hand-offs the switch refused, by reply code.",
                ReplyCode::ALL
                    .iter()
                    .filter(|c| **c != ReplyCode::Accepted)
                    .map(|c| (reason(c.name()), self.refused_count(*c)))
                    .collect(),
            ),
            Family::counter(
                "handoffs_failed",
                "Hand-offs that failed on this node, by reason.",
                FailReason::ALL
                    .iter()
                    .map(|r| (reason(r.name()), self.failed_count(*r)))
                    .collect(),
            ),
            Family::histogram(
                "handoff_latency_seconds",
                "Time from the hand-off decision to the switch's acceptance.",
                vec![(Vec::new(), self.handoff_latency.snapshot())],
            ),
            Family::histogram(
                "handoff_phase_seconds",
                "Time a hand-off spends in each phase: unacked (the client acknowledging this node's bytes), leg (opening or taking c2), control (the switch's answer), forward (the read request bytes onto c2).",
                HandoffPhase::ALL
                    .iter()
                    .zip(&self.handoff_phases)
                    .map(|(p, h)| (vec![("phase", p.name().to_string())], h.snapshot()))
                    .collect(),
            ),
            Family::counter(
                "control_retransmits",
                "Control requests sent again.",
                one(v(&self.control_retransmits)),
            ),
            Family::counter(
                "control_ignored",
                "Control datagrams ignored.",
                one(v(&self.control_ignored)),
            ),
            Family::counter(
                "c2_pool_hits",
                "New legs taken from the pre-connected pool.",
                one(v(&self.c2_pool_hits)),
            ),
            Family::counter(
                "c2_pool_misses",
                "New legs connected at hand-off time.",
                one(v(&self.c2_pool_misses)),
            ),
            Family::counter(
                "c2_pool_returned",
                "New legs of refused hand-offs given back to the pool unused.",
                one(v(&self.c2_pool_returned)),
            ),
        ];
        self.tls.families(&mut f);
        f
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label name and value pairs, in the order they are written.
pub type Labels = Vec<(&'static str, String)>;

/// One sample's value, read at the scrape.
#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(u64),
    Histogram(HistogramSnapshot),
}

/// One metric family: its name after `knits_proxy_` (a counter's without `_total`), help, type
/// and samples.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, Value)>,
}

impl Family {
    /// A counter family (the samples' names end in `_total`).
    pub fn counter(name: &'static str, help: &'static str, samples: Vec<(Labels, u64)>) -> Self {
        let samples = samples
            .into_iter()
            .map(|(l, n)| (l, Value::Counter(n)))
            .collect();
        Family {
            name,
            help,
            kind: MetricType::Counter,
            samples,
        }
    }

    /// A gauge family.
    pub fn gauge(name: &'static str, help: &'static str, samples: Vec<(Labels, u64)>) -> Self {
        let samples = samples
            .into_iter()
            .map(|(l, n)| (l, Value::Gauge(n)))
            .collect();
        Family {
            name,
            help,
            kind: MetricType::Gauge,
            samples,
        }
    }

    /// A histogram family.
    pub fn histogram(
        name: &'static str,
        help: &'static str,
        samples: Vec<(Labels, HistogramSnapshot)>,
    ) -> Self {
        let samples = samples
            .into_iter()
            .map(|(l, h)| (l, Value::Histogram(h)))
            .collect();
        Family {
            name,
            help,
            kind: MetricType::Histogram,
            samples,
        }
    }
}

/// An unlabelled sample.
pub fn one(v: u64) -> Vec<(Labels, u64)> {
    vec![(Vec::new(), v)]
}

/// A `reason` label.
fn reason(name: &str) -> Labels {
    vec![("reason", name.to_string())]
}

/// The OpenMetrics text of `families`, each name after `prefix` and `_`: the encoding of the
/// proxy's metrics and of knits-host's switch counters alike.
pub fn encode(prefix: &str, families: Vec<Family>) -> String {
    let mut registry = Registry::with_prefix(prefix);
    registry.register_collector(Box::new(Families(families)));
    let mut s = String::with_capacity(8192);
    prometheus_client::encoding::text::encode(&mut s, &registry)
        .expect("encoding into a String does not fail");
    s
}

/// The families of one scrape, as a collector of constant metrics.
#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        for f in &self.0 {
            let mut m = enc.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let e = m.encode_family(labels)?;
                match v {
                    Value::Counter(n) => ConstCounter::new(*n).encode(e)?,
                    Value::Gauge(n) => ConstGauge::new(*n).encode(e)?,
                    Value::Histogram(h) => h.encode(e)?,
                }
            }
        }
        Ok(())
    }
}

/// Serves [`Metrics::render`] over HTTP on `listener` (any path, one response per connection).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let m = metrics.clone();
        tokio::spawn(async move {
            let mut c = Conn::new(stream);
            let lim = Limits::default();
            let head = c
                .read_head(Duration::from_secs(10), |b| parse_request(b, &lim))
                .await;
            if !matches!(head, Ok(ReadHead::Head(_))) {
                return;
            }
            let body = m.render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {CONTENT_TYPE}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = c.write_all(resp.as_bytes()).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut c).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(700));
        h.observe(Duration::from_secs(10));
        let c = h.cumulative();
        assert_eq!(c[0], (50, 1));
        assert_eq!(c[4], (1_000, 2));
        assert_eq!(c.last().unwrap().1, 2, "10 s lies only in +Inf");
        assert_eq!(h.count(), 3);
        assert_eq!(h.quantile_bound_us(0.5), Some(1_000));
    }

    #[test]
    fn render_names_refusals_by_reply_code() {
        let m = Metrics::default();
        m.refused(ReplyCode::NotOwner);
        m.refused(ReplyCode::NotOwner);
        m.failed(FailReason::Timeout);
        m.handoff_latency.observe(Duration::from_micros(300));
        let text = m.render();
        assert!(
            text.contains("knits_proxy_handoffs_refused_total{reason=\"not_owner\"} 2"),
            "{text}"
        );
        assert!(text.contains("knits_proxy_handoffs_failed_total{reason=\"timeout\"} 1"));
        assert!(text.contains("knits_proxy_handoff_latency_seconds_bucket{le=\"0.0005\"} 1"));
        assert!(text.contains("knits_proxy_handoff_latency_seconds_count 1"));
        m.handoff_phases[HandoffPhase::Control as usize].observe(Duration::from_micros(40));
        let text = m.render();
        assert!(text.contains(
            "knits_proxy_handoff_phase_seconds_bucket{le=\"0.0001\",phase=\"control\"} 1"
        ));
        assert!(text.contains("knits_proxy_handoff_phase_seconds_count{phase=\"control\"} 1"));
        assert!(text.contains("knits_proxy_handoff_phase_seconds_count{phase=\"leg\"} 0"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }

    /// The family names, their types and every sample's name and label set are what
    /// scrapers and knits-bench store: this pins them (the order of labels within a sample and
    /// the spelling of numbers are the encoder's).
    #[test]
    fn families_and_samples_are_pinned() {
        let text = Metrics::default().render();
        let families: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let want = [
            ("connections_accepted", "counter"),
            ("connections_open", "gauge"),
            ("requests_local", "counter"),
            ("requests_rejected", "counter"),
            ("upstream_errors", "counter"),
            ("upstream_connects", "counter"),
            ("handoffs_initiated", "counter"),
            ("handoffs_accepted", "counter"),
            ("handoffs_refused", "counter"),
            ("handoffs_failed", "counter"),
            ("handoff_latency_seconds", "histogram"),
            ("handoff_phase_seconds", "histogram"),
            ("control_retransmits", "counter"),
            ("control_ignored", "counter"),
            ("c2_pool_hits", "counter"),
            ("c2_pool_misses", "counter"),
            ("c2_pool_returned", "counter"),
            ("tls_connections", "counter"),
            ("tls_hellos", "counter"),
            ("tls_hellos_without_sni", "counter"),
            ("tls_local", "counter"),
            ("tls_to_peer", "counter"),
            ("tls_rejected", "counter"),
            ("tls_sent_to_default", "counter"),
            ("tls_upstream_errors", "counter"),
            ("tls_handoff_retries", "counter"),
            ("tls_fallback_local", "counter"),
            ("tls_refused_after_handoff", "counter"),
        ];
        let want: Vec<(String, &str)> = want
            .iter()
            .map(|(n, t)| (format!("knits_proxy_{n}"), *t))
            .collect();
        let got: Vec<(String, &str)> = families.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        assert_eq!(got, want);
        assert!(text.ends_with("# EOF\n"));
        // Every sample: a family's name (a counter's with `_total`, a histogram's with
        // `_bucket`, `_sum` or `_count`), the label names it had before, a number.
        let mut samples = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (head, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
            let (name, labels) = head.split_once('{').unwrap_or((head, ""));
            let mut keys: Vec<&str> = labels
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                .collect();
            keys.sort();
            samples.insert(format!("{name}{{{}}}", keys.join(",")));
        }
        let samples: Vec<String> = samples.into_iter().collect();
        let want_samples = [
            "knits_proxy_c2_pool_hits_total{}",
            "knits_proxy_c2_pool_misses_total{}",
            "knits_proxy_c2_pool_returned_total{}",
            "knits_proxy_connections_accepted_total{}",
            "knits_proxy_connections_open{}",
            "knits_proxy_control_ignored_total{}",
            "knits_proxy_control_retransmits_total{}",
            "knits_proxy_handoff_latency_seconds_bucket{le}",
            "knits_proxy_handoff_latency_seconds_count{}",
            "knits_proxy_handoff_latency_seconds_sum{}",
            "knits_proxy_handoff_phase_seconds_bucket{le,phase}",
            "knits_proxy_handoff_phase_seconds_count{phase}",
            "knits_proxy_handoff_phase_seconds_sum{phase}",
            "knits_proxy_handoffs_accepted_total{}",
            "knits_proxy_handoffs_failed_total{reason}",
            "knits_proxy_handoffs_initiated_total{}",
            "knits_proxy_handoffs_refused_total{reason}",
            "knits_proxy_requests_local_total{}",
            "knits_proxy_requests_rejected_total{status}",
            "knits_proxy_tls_connections_total{}",
            "knits_proxy_tls_fallback_local_total{}",
            "knits_proxy_tls_handoff_retries_total{}",
            "knits_proxy_tls_hellos_total{}",
            "knits_proxy_tls_hellos_without_sni_total{}",
            "knits_proxy_tls_local_total{}",
            "knits_proxy_tls_refused_after_handoff_total{}",
            "knits_proxy_tls_rejected_total{reason}",
            "knits_proxy_tls_sent_to_default_total{}",
            "knits_proxy_tls_to_peer_total{}",
            "knits_proxy_tls_upstream_errors_total{}",
            "knits_proxy_upstream_connects_total{}",
            "knits_proxy_upstream_errors_total{}",
        ];
        assert_eq!(samples, want_samples);
        // 16 finite buckets and +Inf per histogram series (the latency and four phases).
        let buckets = text
            .lines()
            .filter(|l| l.contains("_seconds_bucket{"))
            .count();
        assert_eq!(buckets, 5 * (LATENCY_BUCKETS_US.len() + 1));
    }
}
