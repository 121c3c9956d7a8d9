//! Schedules that found bugs, kept as named cases (see the commit that fixed each).

use crate::params::{ConnSpec, Mode, regression};
use crate::request::Req;
use crate::run::run;

fn reqs(r: &[(u8, u32, bool)]) -> Vec<Req> {
    r.iter()
        .map(|&(target, size, wait)| Req {
            target,
            size,
            wait,
            ..Req::default()
        })
        .collect()
}

const R_ISN: [u32; 4] = [2864330359, 3809036051, 3368126887, 647194767];
const R_TS: [u32; 4] = [1417050286, 113414520, 3077889127, 1579048041];

/// The old node's ACK of the last client bytes is lost: the faked FIN must follow its
/// rcv_nxt, and only the exact ACK of the FIN ends the retries (four hand-offs, five bindings).
#[test]
fn regression_faked_fin_after_lost_ack() {
    let r = reqs(&[
        (3, 2920, false),
        (1, 1, false),
        (3, 1460, false),
        (2, 0, true),
    ]);
    run(regression(
        4852341561069444890,
        (248, 132, 0),
        vec![ConnSpec {
            start_ms: 17,
            reqs: r,
            ..ConnSpec::default()
        }],
        R_ISN,
        R_TS,
    ));
}

/// An old node's faked final ACK is lost and it resends its FIN seconds later: the switch still
/// answers (TIME-WAIT outlasts the retransmission).
#[test]
fn regression_old_node_resends_its_fin() {
    let r = reqs(&[
        (3, 2920, false),
        (1, 1, false),
        (3, 1460, false),
        (2, 0, true),
    ]);
    run(regression(
        4852341561068893242,
        (248, 132, 0),
        vec![ConnSpec {
            start_ms: 5,
            reqs: r,
            ..ConnSpec::default()
        }],
        R_ISN,
        R_TS,
    ));
}

/// The client's RST (no ACK flag) after its close goes to the current server, not to the node
/// being retired.
#[test]
fn regression_client_rst_goes_to_the_current_server() {
    let conns = vec![
        ConnSpec {
            start_ms: 1,
            reqs: reqs(&[(1, 68393, false), (3, 75267, true), (2, 1460, false)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 24,
            reqs: reqs(&[
                (3, 0, false),
                (3, 0, false),
                (3, 0, true),
                (3, 1, false),
                (3, 46877, true),
            ]),
            ..ConnSpec::default()
        },
    ];
    let isn = [1434609038, 4265146813, 2954594934, 4142866020];
    let ts = [782911181, 3627543693, 2458458993, 1641760704];
    run(regression(43246526622804288, (0, 373, 0), conns, isn, ts));
}

/// The old node's ACKs of the last client bytes and its duplicate ACKs are all lost: the faked
/// FIN at its last seen ACK is ignored, so a retry goes at the end of what it was delivered.
#[test]
fn regression_faked_fin_at_the_end_of_what_was_delivered() {
    let conns = vec![ConnSpec {
        start_ms: 21,
        reqs: reqs(&[
            (3, 0, false),
            (2, 30696, false),
            (1, 13161, true),
            (1, 35108, false),
            (3, 1460, true),
        ]),
        ..ConnSpec::default()
    }];
    run(regression(
        10663311309538500138,
        (382, 324, 0),
        conns,
        [772926164, 4269852760, 2616335014, 2265053739],
        [3167549670, 3003652454, 2784488620, 1906940610],
    ));
}

/// A duplicated roll-back RST is counted once; the hung target is rolled back three times.
#[test]
fn regression_hung_target_three_rollbacks() {
    let conns = vec![
        ConnSpec {
            start_ms: 6,
            reqs: reqs(&[(2, 1277, true)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 19,
            reqs: reqs(&[
                (3, 0, true),
                (2, 40788, true),
                (3, 0, true),
                (3, 1, true),
                (2, 21799, true),
            ]),
            ..ConnSpec::default()
        },
    ];
    let mut p = regression(
        3353240908778568366,
        (0, 215, 0),
        conns,
        [3042860906, 325838363, 3822503455, 3886510461],
        [2719974233, 1857171294, 1794428651, 3050750441],
    );
    p.modes[3] = Mode::Mute;
    run(p);
}

/// A roll-back RST to the old node is lost while the target is hung: the switch answers the old
/// node's retransmissions on the dead leg with an RST, so it learns of the roll-back and serves.
#[test]
fn regression_rollback_rst_lost_with_a_hung_target() {
    let mut p = regression(
        8658180500338102478,
        (392, 60, 304),
        vec![ConnSpec {
            start_ms: 14,
            reqs: reqs(&[(3, 2920, true), (3, 0, true), (1, 2920, false)]),
            ..ConnSpec::default()
        }],
        [1575902548, 1015153485, 4074660267, 3988367367],
        [96915959, 3459175915, 1352097237, 858490041],
    );
    p.modes[3] = Mode::Mute;
    run(p);
    let conns = vec![
        ConnSpec {
            start_ms: 13,
            reqs: reqs(&[(3, 1, false), (1, 75041, false), (3, 36448, false)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 10,
            reqs: reqs(&[
                (1, 1460, true),
                (3, 1460, false),
                (2, 72048, false),
                (1, 65200, false),
            ]),
            ..ConnSpec::default()
        },
    ];
    let mut p = regression(
        73398193433327730,
        (382, 0, 345),
        conns,
        [2716747419, 4244031387, 1870496340, 331533355],
        [3192775342, 120355464, 1168396269, 496575657],
    );
    p.modes[3] = Mode::Mute;
    run(p);
}

/// A node closes its new leg to a hung target right after a refusal: both ends stay half
/// closed (the hung node never closes), which is the hung node's doing, not the switch's.
#[test]
fn regression_refused_leg_to_a_hung_target() {
    let mut p = regression(
        10452091865657170166,
        (371, 0, 0),
        vec![ConnSpec {
            start_ms: 24,
            reqs: reqs(&[(2, 0, true), (3, 0, true), (2, 1, false), (2, 2835, true)]),
            ..ConnSpec::default()
        }],
        [1247577016, 3459373474, 1273294963, 163561861],
        [2090957966, 233051460, 381437973, 3592900906],
    );
    p.modes[3] = Mode::Mute;
    run(p);
}

/// Two nodes' requests carry the same counter; one hand-off is rolled back: the other node's
/// retransmitted request still gets its own answer (`accepted`), not `rolled_back`.
#[test]
fn regression_rollback_answer_is_per_node() {
    let conns = vec![
        ConnSpec {
            start_ms: 14,
            reqs: reqs(&[(2, 2920, false)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 35,
            reqs: reqs(&[
                (3, 2920, false),
                (3, 2920, true),
                (3, 0, true),
                (1, 2920, false),
            ]),
            ..ConnSpec::default()
        },
    ];
    let mut p = regression(
        6578455471563085016,
        (311, 0, 0),
        conns,
        [3905183828, 2267613003, 303520373, 809657432],
        [4098314723, 3968215687, 3162998393, 1000938504],
    );
    p.modes[3] = Mode::Mute;
    run(p);
}

/// The roll-back RST to the target is lost while the target has nothing to send.
#[test]
fn regression_rollback_rst_lost_to_an_idle_target() {
    let conns = vec![
        ConnSpec {
            start_ms: 30,
            reqs: reqs(&[(1, 1, true)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 20,
            reqs: reqs(&[(2, 1460, true), (1, 0, true)]),
            ..ConnSpec::default()
        },
    ];
    run(regression(
        6513767423951122740,
        (374, 0, 0),
        conns,
        [1900428047, 514099141, 521655952, 1404281231],
        [3469898627, 130488326, 63123189, 3365869222],
    ));
}

/// A pipelined connection through three nodes under duplication and reordering: a duplicated
/// ACK of the old node's FIN must not reach it beyond what it sent.
#[test]
fn regression_pipelined_three_owners_duplicated() {
    run(regression(
        2800603809224719110,
        (0, 267, 480),
        vec![ConnSpec {
            start_ms: 2,
            reqs: reqs(&[(2, 0, false), (3, 0, false), (1, 2920, true)]),
            ..ConnSpec::default()
        }],
        [4155852664, 1122624270, 703924019, 4173971543],
        [3178226211, 2519543189, 93988925, 698532420],
    ));
}

/// An upload whose tail was lost on the way to the old node, with the client's FIN behind it:
/// the old node must be closed at its own rcv_nxt (past the splice point), not at the client's
/// FIN, which it never gets (the client resends the tail to the target).
#[test]
fn regression_upload_tail_lost_at_the_old_node() {
    let mut p = regression(
        657658598317238044,
        (135, 0, 446),
        vec![ConnSpec {
            start_ms: 36,
            reqs: vec![
                Req {
                    target: 3,
                    size: 80,
                    wait: true,
                    close: false,
                    body: 0,
                },
                Req {
                    target: 3,
                    size: 2920,
                    wait: true,
                    close: false,
                    body: 0,
                },
                Req {
                    target: 1,
                    size: 1,
                    wait: false,
                    close: false,
                    body: 19226,
                },
            ],
            lport: None,
            after: None,
            half_close: true,
            notify_then_reset: false,
        }],
        [1137656696, 1795110129, 3696644080, 2023203993],
        [3201721333, 1278148474, 196441879, 922755113],
    );
    p.client_sack = false;
    run(p);
}
