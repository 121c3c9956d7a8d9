//! The control target: the request and reply decoders and the verifier, and requests into a
//! switch.

use knits_core::checksum::Kind;
use knits_core::counters::{DropReason, LocalKind};
use knits_core::switch::Verdict;
use knits_core::wire::control::{self, Reply, ReplyRepr, Request, RequestRepr};

use super::cluster::KEY;
use super::frame::udp_frame;
use super::ops::SYN_OPTS;
use super::reader::Reader;
use super::script::{Stage, handoff_script};

/// Control target. Byte 0: bit 0 = sign the message with the cluster key first; bits 1-2 = the
/// node (1..=3) that sends it; bit 3 = also send it to a switch with an established connection
/// (bit 4: after a hand-off was accepted). The rest: the message bytes.
pub fn check_control(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.u8();
    let mut msg = r.rest().to_vec();
    if mode & 1 != 0 && msg.len() >= control::REQUEST_LEN {
        let t = control::tag(&KEY, &msg[..56]);
        msg[56..64].copy_from_slice(&t);
    }
    // Request decoder.
    match Request::new_checked(&msg[..]) {
        Ok(req) => {
            assert!(msg.len() >= control::REQUEST_LEN);
            let repr = RequestRepr::parse(&req);
            let want = control::tag(&KEY, &msg[..56]);
            assert_eq!(
                req.verify(&KEY),
                want[..] == msg[56..64],
                "verify disagrees with the tag"
            );
            assert_eq!(req.tag()[..], msg[56..64]);
            let mut buf = [0u8; control::REQUEST_LEN];
            assert_eq!(repr.emit(&mut buf, &KEY), Some(control::REQUEST_LEN));
            for i in 0..56 {
                if !(5..8).contains(&i) {
                    assert_eq!(buf[i], msg[i], "re-emitted request differs at byte {i}");
                }
            }
            let again = Request::new_checked(&buf[..]).expect("an emitted request parses");
            assert!(again.verify(&KEY));
            assert_eq!(RequestRepr::parse(&again), repr);
            if msg[5..8] == [0, 0, 0] {
                assert_eq!(
                    req.verify(&KEY),
                    buf[..] == msg[..64],
                    "a verified request is its own re-emission"
                );
            }
        }
        Err(e) => {
            let ok_header = msg.len() >= 4
                && msg[..2] == control::MAGIC
                && msg[2] == control::VERSION
                && msg[3] == control::TYPE_REQUEST;
            assert!(
                !(ok_header && msg.len() >= control::REQUEST_LEN),
                "a good request refused: {e:?}"
            );
        }
    }
    // Reply decoder.
    if let Ok(rep) = Reply::new_checked(&msg[..]) {
        let repr = ReplyRepr::parse(&rep);
        let mut buf = [0u8; control::REPLY_LEN];
        assert_eq!(repr.emit(&mut buf, &KEY), Some(control::REPLY_LEN));
        let again = Reply::new_checked(&buf[..]).expect("an emitted reply parses");
        assert!(again.verify(&KEY));
        assert_eq!(ReplyRepr::parse(&again), repr);
        let want = control::tag(&KEY, &msg[..24]);
        assert_eq!(rep.verify(&KEY), want[..] == msg[24..32]);
    }
    for n in 0..msg.len().min(control::REQUEST_LEN) {
        assert!(
            Request::new_checked(&msg[..n]).is_err(),
            "a {n}-byte request parsed"
        );
    }
    // Into a switch.
    if mode & 8 != 0 {
        let node = 1 + (mode >> 1) % 3;
        let stage = if mode & 16 != 0 {
            Stage::Accepted
        } else {
            Stage::Established
        };
        let mut s = handoff_script(0, SYN_OPTS, stage);
        let c = s.h.sw.config().clone();
        let n = node as usize;
        let mut f = udp_frame(
            ([198, 19, node, 2], 40100),
            (c.ports[n].gateway.octets(), control::DEFAULT_PORT),
            c.ports[n].mac,
            &msg,
        );
        let v = s.h.frame(node, &mut f, Kind::Full);
        assert!(
            matches!(
                v,
                None | Some(
                    Verdict::Local(LocalKind::Control)
                        | Verdict::Drop(DropReason::ControlMalformed)
                )
            ),
            "a control message gave {v:?}"
        );
    }
}
