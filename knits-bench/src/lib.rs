//! # knits-bench
//!
//! The paper's micro-benchmarks (section V, Figures 6-8) on this machine, beside what a user
//! would run instead of KNITS: a direct veth, kernel forwarding, Netfilter NAT (nftables) and an
//! L7 proxy (HAProxy), all with the same nginx back-end and the same unmodified client (wrk).
//! `knits-bench run` builds each topology in network namespaces, measures, tears it down and
//! writes CSV, markdown and plots (docs/benchmarks.md).
//!
//! The pure parts (scenario selection, wrk output, trimmed means, CSV and markdown, the proxy's
//! histogram, /proc parsing) are unit-tested; [`topo`] and [`runner`] need root.
#![deny(missing_docs)]

pub mod cpu;
pub mod numfmt;
pub mod paper;
pub mod plot;
pub mod prom;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod topo;
pub mod wrk;
