//! # knits-host
//!
//! KNITS on Linux. The switch of knits-core runs over TAP devices, one per port, in an event
//! loop of this crate; a cluster of network namespaces gives it a client and back-end nodes that
//! run real Linux TCP, the knits-proxy and an origin web server.
//!
//! ## Layers
//! - [`vnet`], [`tap`]: TAP devices with virtio-net headers (TSO frames, partial checksums).
//! - [`faults`]: a seeded per-port fault injector (loss, reordering, duplication, corruption).
//! - [`pcap`]: a pcapng writer, one interface per port.
//! - [`stats`]: counter snapshots, the human table, Prometheus text and the server for both.
//! - [`netns`]: namespaces, processes started in them, and the guard that removes them.
//! - [`http`], [`load`]: the client side of HTTP/1.1 and the verifying load client.
//! - [`datapath`]: what the event loop drives (the [`datapath::Core`] trait, its outcome and
//!   frame sink); [`switch`] the knits-core switch behind it, [`bridge`] a plain two-port wire.
//! - [`runtime`]: the event loop over the TAP ports; `held` the frames its delay fault holds
//!   back, `capture` its pcapng recording.
//! - [`steer`], [`shard`], [`shard_set`]: N loops on N threads, which shard owns a frame, and
//!   the rings, wake-ups and sums that link the shards.
//! - [`cluster`]: the namespace cluster (client, back-ends running origin and proxy).
//! - [`https`]: the services on the VIP, the per-node certificates and the nodes' TLS server.
//!
//! ## Panic contract
//! No frame, HTTP response or configuration file makes this crate panic; bad input is a counted
//! drop or an error that says what to fix.
#![deny(missing_docs)]

pub mod bridge;
mod capture;
pub mod cluster;
pub mod datapath;
pub mod faults;
mod held;
pub mod http;
pub mod https;
pub mod load;
pub mod netns;
pub mod pcap;
pub mod runtime;
pub mod services;
pub mod shard;
pub mod shard_set;
pub mod stats;
pub mod steer;
pub mod switch;
pub mod tap;
pub mod vnet;

#[cfg(test)]
mod testutil;
