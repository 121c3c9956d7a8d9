//! # knits-core
//!
//! The switch half of KNITS (Knowledgeable Node Initiated TCP Splicing, Papathanasiou and Van
//! Hensbergen): an edge switch that sprays TCP connections over back-end nodes with NAT and, when
//! a node asks, splices a client's connection onto a new connection to another node, translating
//! addresses, ports, sequence and acknowledgment numbers, SACK blocks, timestamps and windows on
//! every packet.
//!
//! `no_std`, no allocator, no `unsafe`. The caller owns all memory (flow storage, frame buffers)
//! and the clock.
//!
//! ## Layers
//! - [`wire`]: views over packet bytes (smoltcp's, plus TCP options and the control messages).
//! - [`checksum`], [`seq`]: RFC 1071/1624 arithmetic and serial-number arithmetic.
//! - [`table`]: the flow table (caller storage, keyed hash, bounded expiry).
//! - [`spray`]: back-end choice for new connections.
//! - [`splice`]: the hand-off state machine and bindings.
//! - [`switch`]: the per-packet pipeline (parse, classify, lookup, decide, rewrite, verdict).
//! - [`meter`], [`counters`]: what each step did, and what happened to each packet.
//!
//! ## Panic contract
//! No input frame, control message, configuration or clock value makes this crate panic. A full
//! table is an `Err`; a malformed frame is a [`switch::Verdict::Drop`] with a reason.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[macro_use]
mod log;

pub mod checksum;
pub mod config;
pub mod counters;
mod macros;
pub mod meter;
pub mod seq;
pub mod splice;
pub mod spray;
pub mod switch;
pub mod table;
pub mod time;
pub mod wire;
