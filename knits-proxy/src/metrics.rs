//! Proxy metrics: counters and the hand-off latency histogram, rendered in the Prometheus text
//! exposition format (version 0.0.4) and served on a local address when asked.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use knits_core::wire::control::ReplyCode;
use tokio::net::TcpListener;

use crate::conn::{Conn, ReadHead};
use crate::framing::{Limits, parse_request};
use crate::named::named_enum;

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

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let c = |o: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(o, "# HELP knits_proxy_{name} {help}");
            let _ = writeln!(o, "# TYPE knits_proxy_{name} counter");
            let _ = writeln!(o, "knits_proxy_{name} {}", v.load(Relaxed));
        };
        c(
            &mut o,
            "connections_accepted_total",
            "Client connections accepted.",
            &self.connections_accepted,
        );
        let _ = writeln!(
            o,
            "# HELP knits_proxy_connections_open Client connections open now."
        );
        let _ = writeln!(o, "# TYPE knits_proxy_connections_open gauge");
        let _ = writeln!(
            o,
            "knits_proxy_connections_open {}",
            self.connections_open.load(Relaxed)
        );
        c(
            &mut o,
            "requests_local_total",
            "Requests served by the local upstream.",
            &self.requests_local,
        );
        let _ = writeln!(
            o,
            "# HELP knits_proxy_requests_rejected_total Requests answered with an error by the proxy."
        );
        let _ = writeln!(o, "# TYPE knits_proxy_requests_rejected_total counter");
        for (status, v) in [
            ("400", &self.requests_bad),
            ("431", &self.requests_too_large),
            ("501", &self.requests_unsupported),
        ] {
            let _ = writeln!(
                o,
                "knits_proxy_requests_rejected_total{{status=\"{status}\"}} {}",
                v.load(Relaxed)
            );
        }
        c(
            &mut o,
            "upstream_errors_total",
            "Requests that failed on the upstream side.",
            &self.upstream_errors,
        );
        c(
            &mut o,
            "upstream_connects_total",
            "Upstream connections opened.",
            &self.upstream_connects,
        );
        c(
            &mut o,
            "handoffs_initiated_total",
            "Hand-offs started.",
            &self.handoffs_initiated,
        );
        c(
            &mut o,
            "handoffs_accepted_total",
            "Hand-offs the switch accepted.",
            &self.handoffs_accepted,
        );
        let _ = writeln!(
            o,
            "# HELP knits_proxy_handoffs_refused_total Hand-offs the switch refused, by reply code."
        );
        let _ = writeln!(o, "# TYPE knits_proxy_handoffs_refused_total counter");
        for code in ReplyCode::ALL.iter().filter(|c| **c != ReplyCode::Accepted) {
            let _ = writeln!(
                o,
                "knits_proxy_handoffs_refused_total{{reason=\"{}\"}} {}",
                code.name(),
                self.refused_count(*code)
            );
        }
        let _ = writeln!(
            o,
            "# HELP knits_proxy_handoffs_failed_total Hand-offs that failed on this node, by reason."
        );
        let _ = writeln!(o, "# TYPE knits_proxy_handoffs_failed_total counter");
        for r in FailReason::ALL {
            let _ = writeln!(
                o,
                "knits_proxy_handoffs_failed_total{{reason=\"{}\"}} {}",
                r.name(),
                self.failed_count(r)
            );
        }
        let _ = writeln!(
            o,
            "# HELP knits_proxy_handoff_latency_seconds Time from the hand-off decision to the switch's acceptance."
        );
        let _ = writeln!(o, "# TYPE knits_proxy_handoff_latency_seconds histogram");
        histogram(
            &mut o,
            "knits_proxy_handoff_latency_seconds",
            "",
            &self.handoff_latency,
        );
        let _ = writeln!(
            o,
            "# HELP knits_proxy_handoff_phase_seconds Time a hand-off spends in each phase: unacked (the client acknowledging this node's bytes), leg (opening or taking c2), control (the switch's answer), forward (the read request bytes onto c2)."
        );
        let _ = writeln!(o, "# TYPE knits_proxy_handoff_phase_seconds histogram");
        for (p, h) in HandoffPhase::ALL.iter().zip(&self.handoff_phases) {
            let label = format!("phase=\"{}\",", p.name());
            histogram(&mut o, "knits_proxy_handoff_phase_seconds", &label, h);
        }
        c(
            &mut o,
            "control_retransmits_total",
            "Control requests sent again.",
            &self.control_retransmits,
        );
        c(
            &mut o,
            "control_ignored_total",
            "Control datagrams ignored.",
            &self.control_ignored,
        );
        c(
            &mut o,
            "c2_pool_hits_total",
            "New legs taken from the pre-connected pool.",
            &self.c2_pool_hits,
        );
        c(
            &mut o,
            "c2_pool_misses_total",
            "New legs connected at hand-off time.",
            &self.c2_pool_misses,
        );
        c(
            &mut o,
            "c2_pool_returned_total",
            "New legs of refused hand-offs given back to the pool unused.",
            &self.c2_pool_returned,
        );
        self.tls.render(&mut o);
        o
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
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = c.write_all(resp.as_bytes()).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut c).await;
        });
    }
}

/// One histogram's series in Prometheus text; `label` is `name="value",` or empty.
fn histogram(o: &mut String, name: &str, label: &str, h: &Histogram) {
    use std::fmt::Write as _;
    for (b, n) in h.cumulative() {
        let _ = writeln!(o, "{name}_bucket{{{label}le=\"{}\"}} {n}", b as f64 / 1e6);
    }
    let _ = writeln!(o, "{name}_bucket{{{label}le=\"+Inf\"}} {}", h.count());
    let l = label.trim_end_matches(',');
    let l = if l.is_empty() {
        String::new()
    } else {
        format!("{{{l}}}")
    };
    let _ = writeln!(o, "{name}_sum{l} {}", h.sum().as_secs_f64());
    let _ = writeln!(o, "{name}_count{l} {}", h.count());
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
            "knits_proxy_handoff_phase_seconds_bucket{phase=\"control\",le=\"0.0001\"} 1"
        ));
        assert!(text.contains("knits_proxy_handoff_phase_seconds_count{phase=\"control\"} 1"));
        assert!(text.contains("knits_proxy_handoff_phase_seconds_count{phase=\"leg\"} 0"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }
}
