//! # knits-proxy
//!
//! The back-end proxy of KNITS (paper section IV.C): it accepts the connections the switch
//! sprays to this node, parses each HTTP/1.1 request in turn, and either serves it through the
//! node's own web server or hands the whole connection off to the peer that should serve it, by
//! asking the switch to splice it onto a new connection to that peer.
//!
//! ## Layers
//! - [`framing`]: HTTP/1.x heads, body framing, chunked coding, persistence, head rewriting
//!   (pure, no I/O).
//! - [`conn`]: a connection with its read buffer and the byte counts the hand-off anchors need.
//! - [`policy`]: which node serves a path (prefix map, weighted consistent hash, local only).
//! - [`upstream`], [`splice`]: serving a request through the local web server over kept-alive
//!   connections, response bodies spliced (socket to pipe to socket).
//! - [`handoff`], [`control`], [`leg`], [`pool`], [`sockopt`]: the hand-off itself, the signed
//!   UDP control channel to the switch, opening a new leg (in the right shard), pre-connected new
//!   legs, and the socket facts (SIOCOUTQ, TCP_MAXSEG, TCP_QUICKACK).
//! - [`proxy`]: the accept loop and the per-connection request loop.
//! - [`metrics`]: counters and the hand-off latency histogram, in Prometheus text format.
//! - [`config`]: TOML file and flags, validated.
//! - [`content`], [`origin`]: the deterministic origin server and its verifiable object bytes.
//! - [`tls`]: the TLS listener: routes by the ClientHello's server name and hands off without
//!   terminating TLS.
//!
//! ## Panic contract
//! No network input makes this crate panic: heads, bodies and control replies are parsed with
//! checked views, and every failure becomes an HTTP error response, a closed connection, or a
//! local fallback for a hand-off.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod config;
pub mod conn;
pub mod content;
pub mod control;
pub mod framing;
pub mod handoff;
pub mod leg;
pub mod metrics;
pub mod origin;
pub mod policy;
pub mod pool;
pub mod proxy;
pub mod sockopt;
pub mod splice;
pub mod tls;
pub mod upstream;

pub use config::ProxyConfig;
pub use origin::Origin;
pub use proxy::Proxy;
