//! Time as the caller passes it in. The core never reads a clock.
//!
//! These are smoltcp's types, so a smoltcp-based harness and the switch share one clock.

pub use smoltcp::time::{Duration, Instant};
