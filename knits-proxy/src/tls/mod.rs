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

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::{Family, one};

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

    /// Appends the families of these counters to `f` (see [`crate::metrics`]).
    pub fn families(&self, f: &mut Vec<Family>) {
        let v = |a: &AtomicU64| a.load(Relaxed);
        f.extend([
            Family::counter(
                "tls_connections",
                "TLS connections accepted.",
                one(v(&self.connections)),
            ),
            Family::counter(
                "tls_hellos",
                "Complete ClientHellos read.",
                one(v(&self.hellos)),
            ),
            Family::counter(
                "tls_hellos_without_sni",
                "ClientHellos without a server name.",
                one(v(&self.hellos_without_sni)),
            ),
            Family::counter(
                "tls_local",
                "TLS connections relayed to the local TLS server.",
                one(v(&self.local)),
            ),
            Family::counter(
                "tls_to_peer",
                "TLS connections decided for a peer (hand-offs count in handoffs_*).",
                one(v(&self.to_peer)),
            ),
            Family::counter(
                "tls_rejected",
                "TLS connections without a usable ClientHello, by reason.",
                Rejected::ALL
                    .into_iter()
                    .map(|r| {
                        (
                            vec![("reason", r.name().to_string())],
                            self.rejected_count(r),
                        )
                    })
                    .collect(),
            ),
            Family::counter(
                "tls_sent_to_default",
                "Rejected TLS connections sent to the default node.",
                one(v(&self.sent_to_default)),
            ),
            Family::counter(
                "tls_upstream_errors",
                "Relays to the local TLS server that could not connect.",
                one(v(&self.upstream_errors)),
            ),
            Family::counter(
                "tls_handoff_retries",
                "Further TLS hand-off attempts after a failed one.",
                one(v(&self.handoff_retries)),
            ),
            Family::counter(
                "tls_fallback_local",
                "TLS connections for a peer served locally after the hand-off failed (local certificate for the name).",
                one(v(&self.fallback_local)),
            ),
            Family::counter(
                "tls_refused_after_handoff",
                "TLS connections for a peer closed with an alert after the hand-off failed (no local certificate for the name).",
                one(v(&self.refused_after_handoff)),
            ),
        ]);
    }
}
