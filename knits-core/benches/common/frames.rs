//! Frames for the instruction-count example (`examples/per_packet.rs` includes this file by
//! `#[path]`): the test kit's shorthands under the names the example uses.
#![allow(unused_imports)]

pub use knits_testkit::frames::{
    CLIENT_MAC, NODE_MAC, Opts, arp_request as arp, fix_checksums, tcp, tcp_opts, udp,
};
pub use knits_testkit::sink::Discard;
