//! HTTPS without terminating TLS: the proxy's TLS listener reads each connection's ClientHello
//! and nothing more, picks the node that serves the name (or the ALPN protocol), and hands the
//! connection off to it before any server byte was sent. The TLS session then lives wholly on
//! the target: the bytes never cross a proxy again, and no node but the target holds the
//! certificate. A hello for a name this node serves is relayed, as TCP, to the node's own TLS
//! server.
//!
//! - [`hello`]: the ClientHello reader (records, fragments, SNI and ALPN; pure, no I/O).
//! - [`route`]: name, wildcard, ALPN, hash and default rules.
//! - [`config`]: the `[tls]` table and the `--tls-*` flags.
//! - [`listener`]: the accept loop and the per-connection decision.
//!
//! The hand-off is the HTTP path's own ([`crate::handoff::hand_off`]): nothing of c1 was
//! consumed, so the bytes it forwards on the new leg are exactly the ClientHello (and anything
//! the client sent after it).

pub mod config;
pub mod hello;
pub mod listener;
pub mod route;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use config::{TlsArgs, TlsConfig};
pub use hello::{ClientHello, HelloError, HelloLimits, read_client_hello};
pub use listener::TlsListener;
pub use route::TlsRoutes;

/// Why a TLS connection got no routing by its ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejected {
    /// The bytes can never be a hello ([`HelloError`]).
    Hello(HelloError),
    /// No complete hello within the hello time-out.
    Timeout,
    /// The client closed (or reset) before its hello was complete.
    Closed,
}

impl Rejected {
    /// Every reason, in index order.
    pub const ALL: [Rejected; 6] = [
        Rejected::Hello(HelloError::NotTls),
        Rejected::Hello(HelloError::Sslv2),
        Rejected::Hello(HelloError::Malformed),
        Rejected::Hello(HelloError::Oversized),
        Rejected::Timeout,
        Rejected::Closed,
    ];

    /// Stable snake_case name (the `reason` label).
    pub const fn name(self) -> &'static str {
        match self {
            Rejected::Hello(e) => e.name(),
            Rejected::Timeout => "timeout",
            Rejected::Closed => "closed",
        }
    }

    fn index(self) -> usize {
        match self {
            Rejected::Hello(HelloError::NotTls) => 0,
            Rejected::Hello(HelloError::Sslv2) => 1,
            Rejected::Hello(HelloError::Malformed) => 2,
            Rejected::Hello(HelloError::Oversized) => 3,
            Rejected::Timeout => 4,
            Rejected::Closed => 5,
        }
    }
}

/// The TLS listener's counters (hand-offs themselves count in the proxy's hand-off metrics).
#[derive(Debug, Default)]
pub struct TlsMetrics {
    /// TLS connections accepted.
    pub connections: AtomicU64,
    /// Complete ClientHellos read.
    pub hellos: AtomicU64,
    /// ClientHellos without a server name.
    pub hellos_without_sni: AtomicU64,
    /// Connections relayed to the local TLS server.
    pub local: AtomicU64,
    /// Connections decided for a peer (then counted by the hand-off metrics).
    pub to_peer: AtomicU64,
    /// Connections without a usable hello, by [`Rejected`] reason.
    pub rejected: [AtomicU64; Rejected::ALL.len()],
    /// Rejected connections sent to the default node (`on_error = "default"`).
    pub sent_to_default: AtomicU64,
    /// Relays to the local TLS server that could not connect.
    pub upstream_errors: AtomicU64,
    /// Further hand-off attempts after a failed one.
    pub handoff_retries: AtomicU64,
    /// Connections for a peer relayed to the local TLS server after every hand-off attempt
    /// failed (the local server holds a certificate for the name).
    pub fallback_local: AtomicU64,
    /// Connections for a peer closed with an alert after every hand-off attempt failed (the
    /// local server holds no certificate for the name).
    pub refused_after_handoff: AtomicU64,
}

impl TlsMetrics {
    /// Counts a rejection.
    pub fn reject(&self, r: Rejected) {
        self.rejected[r.index()].fetch_add(1, Relaxed);
    }

    /// Rejections for `r` so far.
    pub fn rejected_count(&self, r: Rejected) -> u64 {
        self.rejected[r.index()].load(Relaxed)
    }

    /// Appends the Prometheus text of these counters to `o`.
    pub fn render(&self, o: &mut String) {
        let c = |o: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(o, "# HELP knits_proxy_tls_{name} {help}");
            let _ = writeln!(o, "# TYPE knits_proxy_tls_{name} counter");
            let _ = writeln!(o, "knits_proxy_tls_{name} {}", v.load(Relaxed));
        };
        c(
            o,
            "connections_total",
            "TLS connections accepted.",
            &self.connections,
        );
        c(
            o,
            "hellos_total",
            "Complete ClientHellos read.",
            &self.hellos,
        );
        c(
            o,
            "hellos_without_sni_total",
            "ClientHellos without a server name.",
            &self.hellos_without_sni,
        );
        c(
            o,
            "local_total",
            "TLS connections relayed to the local TLS server.",
            &self.local,
        );
        c(
            o,
            "to_peer_total",
            "TLS connections decided for a peer (hand-offs count in handoffs_*).",
            &self.to_peer,
        );
        let _ = writeln!(
            o,
            "# HELP knits_proxy_tls_rejected_total TLS connections without a usable ClientHello, by reason."
        );
        let _ = writeln!(o, "# TYPE knits_proxy_tls_rejected_total counter");
        for r in Rejected::ALL {
            let _ = writeln!(
                o,
                "knits_proxy_tls_rejected_total{{reason=\"{}\"}} {}",
                r.name(),
                self.rejected_count(r)
            );
        }
        c(
            o,
            "sent_to_default_total",
            "Rejected TLS connections sent to the default node.",
            &self.sent_to_default,
        );
        c(
            o,
            "upstream_errors_total",
            "Relays to the local TLS server that could not connect.",
            &self.upstream_errors,
        );
        c(
            o,
            "handoff_retries_total",
            "Further TLS hand-off attempts after a failed one.",
            &self.handoff_retries,
        );
        c(
            o,
            "fallback_local_total",
            "TLS connections for a peer served locally after the hand-off failed (local certificate for the name).",
            &self.fallback_local,
        );
        c(
            o,
            "refused_after_handoff_total",
            "TLS connections for a peer closed with an alert after the hand-off failed (no local certificate for the name).",
            &self.refused_after_handoff,
        );
    }
}
