//! The stateful target: a sequence of ops (segments, control requests, time, whole hand-off
//! steps) decoded from the input and run through the harness.

use std::string::String;
use std::vec::Vec;

use super::harness::{Harness, header_params};
use super::ops::Op;
use super::reader::Reader;

/// The ops of a stateful input, one line each (for bug reports).
pub fn describe_stateful(data: &[u8]) -> Vec<String> {
    let mut r = Reader::new(data);
    let mut out = vec![format!("header {:?}", header_params(r.u8()))];
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut r) else { break };
        out.push(format!("{op:?}"));
    }
    out
}

/// Most ops one stateful input runs.
pub const MAX_OPS: usize = 256;

/// Stateful target: a header byte (see [`header_params`]), then ops until the input ends; the
/// invariants are checked after every op.
pub fn check_stateful(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut h = Harness::new(r.u8(), false);
    for _ in 0..MAX_OPS {
        let Some(op) = Op::decode(&mut r) else { break };
        h.apply(&op);
    }
}
