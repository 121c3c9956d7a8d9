//! Scenarios: hand-off chains, pipelining, large responses, faults, lost control messages,
//! silent and resetting targets, tuple reuse, long chains, clients without options, half-closed
//! clients.

use std::collections::BTreeMap;

use knits_core::counters::{DropReason, FlowEvent, Generated};
use knits_core::wire::control::ReplyCode;

use crate::params::{ConnSpec, Faults, Mode, Params, pipelined, regression, script};
use crate::request::Req;
use crate::run::{Outcome, run, run_exact};

#[test]
fn zero_handoffs() {
    let p = Params::new(
        1,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 0), (1, 1), (1, 1460), (1, 100_000)]),
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 0);
}

#[test]
fn one_handoff() {
    let p = Params::new(
        2,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 1000), (2, 50_000)]),
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 1);
}

#[test]
fn two_handoffs() {
    let p = Params::new(
        3,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 10), (2, 3000), (3, 70_000)]),
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 2);
}

#[test]
fn three_handoffs_back_to_the_first_node() {
    let p = Params::new(
        4,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 0), (2, 1), (3, 1460), (1, 20_000)]),
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 3);
}

#[test]
fn pipelined_some_served_before_the_handoff() {
    let reqs = pipelined(&[
        (1, 100),
        (1, 0),
        (2, 5000),
        (2, 1),
        (3, 30_000),
        (3, 0),
        (1, 7),
    ]);
    let p = Params::new(
        5,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 3);
}

#[test]
fn responses_up_to_4_mib() {
    let reqs = script(&[(1, 4 << 20), (2, 0), (2, 4 << 20), (3, 1)]);
    let p = Params::new(
        6,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    run_exact(p, 2);
}

#[test]
fn concurrent_connections() {
    let conns = vec![
        ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 100), (2, 2000), (3, 10)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 2,
            reqs: pipelined(&[(2, 0), (3, 40_000), (1, 5)]),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 3,
            reqs: script(&[(3, 64_000), (3, 1)]),
            ..ConnSpec::default()
        },
    ];
    let p = Params::new(7, conns);
    run_exact(p, 4);
}

fn faulty(loss: u32, dup: u32, reorder: u32) -> Faults {
    Faults {
        loss,
        dup,
        reorder,
        max_delay: 8,
        drop_first: [0; 3],
    }
}

#[test]
fn loss_reordering_duplication() {
    for seed in 10..14 {
        let reqs = script(&[(1, 3000), (2, 200_000), (3, 0), (1, 50_000)]);
        let mut p = Params::new(
            seed,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                ..ConnSpec::default()
            }],
        );
        p.faults = faulty(200, 200, 300);
        let o = run(p);
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
    }
}

#[test]
fn pipelined_with_faults() {
    for seed in 20..23 {
        let reqs = pipelined(&[(1, 1), (2, 20_000), (2, 0), (3, 5000), (1, 1460)]);
        let mut p = Params::new(
            seed,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                ..ConnSpec::default()
            }],
        );
        p.faults = faulty(300, 300, 500);
        run(p);
    }
}

#[test]
fn large_responses_with_faults() {
    let reqs = script(&[(1, 4 << 20), (2, 1 << 20), (3, 0)]);
    let mut p = Params::new(
        40,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    p.faults = faulty(100, 100, 200);
    let o = run(p);
    assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
}

/// The first hand-off request, the first reply and the first segment of forwarded bytes are
/// lost: the node retries the request (same counter, same answer) and TCP resends the bytes.
#[test]
fn lost_control_messages_and_forwarded_bytes() {
    for drop_first in [[1, 0, 0], [0, 1, 0], [0, 0, 1], [2, 2, 1]] {
        let reqs = script(&[(1, 100), (2, 3000), (3, 1)]);
        let mut p = Params::new(
            50,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                ..ConnSpec::default()
            }],
        );
        p.faults.drop_first = drop_first;
        let o = run(p);
        // A lost forwarded segment comes back after smoltcp's 1 s RTO, as the switch's 1 s
        // hand-off time-out runs out: either outcome is correct.
        // (`handoffs[accepted]` counts answers: a retransmitted request is answered again.)
        assert!(o.accepted >= 2, "{drop_first:?}\n{}", o.summary);
        assert_eq!(
            o.completed + o.rolled_back,
            2,
            "{drop_first:?}\n{}",
            o.summary
        );
        if drop_first[2] == 0 {
            assert_eq!(
                o.served_by,
                vec![vec![1, 2, 3]],
                "{drop_first:?}\n{}",
                o.summary
            );
        }
    }
}

#[test]
fn target_never_answers() {
    let mut p = Params::new(
        30,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 500), (2, 3000), (1, 10)]),
            ..ConnSpec::default()
        }],
    );
    p.modes[2] = Mode::Mute;
    let o = run(p);
    // Node 1 served everything after the roll-back.
    assert_eq!(o.served_by, vec![vec![1, 1, 1]], "{}", o.summary);
    assert_eq!(
        (o.accepted, o.rolled_back, o.completed),
        (1, 1, 0),
        "{}",
        o.summary
    );
}

#[test]
fn target_resets() {
    let mut p = Params::new(
        31,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&[(1, 500), (3, 3000), (1, 10)]),
            ..ConnSpec::default()
        }],
    );
    p.modes[3] = Mode::Reset;
    let o = run(p);
    assert_eq!(o.served_by, vec![vec![1, 1, 1]], "{}", o.summary);
    assert_eq!(
        (o.accepted, o.rolled_back, o.completed),
        (1, 1, 0),
        "{}",
        o.summary
    );
}

// ------------------------------------------------------------------------------------------------
// Tuple reuse, long hand-off chains, clients without options, half-closed clients.

/// `Connection: close` on the last request: the server closes first.
fn closing(mut reqs: Vec<Req>) -> Vec<Req> {
    if let Some(r) = reqs.last_mut() {
        r.close = true;
    }
    reqs
}

/// Every hand-off asked for was accepted (and answered busy at most), and each one
/// completed.
fn assert_all_accepted(o: &Outcome) {
    let refused: Vec<_> = o
        .codes
        .iter()
        .filter(|c| !matches!(c, ReplyCode::Accepted | ReplyCode::Busy))
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}\n{}", o.summary);
    assert_eq!(
        (o.completed, o.rolled_back),
        (o.accepted, 0),
        "hand-offs\n{}",
        o.summary
    );
}

/// Three connections from one client port, each handed off and closed by its server: the
/// next one opens 1 ms after the previous one ended (the switch still holds that one in
/// TIME-WAIT).
fn reuse_after_handoffs() -> Vec<ConnSpec> {
    let port = 41_000;
    vec![
        ConnSpec {
            start_ms: 1,
            reqs: closing(script(&[(1, 1000), (2, 5000)])),
            lport: Some(port),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 1,
            reqs: closing(script(&[(3, 100), (1, 2000), (2, 30_000)])),
            lport: Some(port),
            after: Some(0),
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 1,
            reqs: closing(script(&[(2, 10), (3, 1460)])),
            lport: Some(port),
            after: Some(1),
            ..ConnSpec::default()
        },
    ]
}

/// A client connection is handed off and ends with the server's close; the client opens the
/// next one from the same port right away. The SYN's timestamp is newer, so the switch reopens
/// the tuple (RFC 6191), sprays it afresh, and the new connection is served and handed off
/// again, twice over. (A reopen while an old node is still being retired: see
/// `golden::a_reopened_tuple_still_retires_the_old_node`.)
#[test]
fn tuple_reuse_after_a_handoff() {
    let p = Params::new(60, reuse_after_handoffs());
    let want = p.targets();
    let o = run(p);
    let c = &o.counters;
    assert_eq!(o.served_by, want, "served by the wrong node\n{}", o.summary);
    assert_all_accepted(&o);
    assert!(o.accepted >= 4, "{}", o.summary);
    assert_eq!(c.event_count(FlowEvent::Reopened), 2, "{}", o.summary);
    assert_eq!(c.drop_count(DropReason::ReuseRefused), 0, "{}", o.summary);
}

/// The same tuple four times, each connection closed by its server: the first and third are
/// not handed off (so their node keeps the tuple in TIME-WAIT), the second and fourth are. The
/// fourth lands on the first one's node, whose TIME-WAIT takes the new SYN (as Linux does). A
/// reopened connection is tracked from its new handshake, so it is never refused as
/// `not_established`.
#[test]
fn tuple_reuse_after_a_plain_connection() {
    let port = 41_007;
    let plain = |after| ConnSpec {
        start_ms: 1,
        // Target 0: whichever node the connection was sprayed to serves it.
        reqs: closing(script(&[(0, 3000), (0, 10)])),
        lport: Some(port),
        after,
        ..ConnSpec::default()
    };
    let handed = |after, t: &[(u8, u32)]| ConnSpec {
        start_ms: 1,
        reqs: closing(script(t)),
        lport: Some(port),
        after,
        ..ConnSpec::default()
    };
    let conns = vec![
        plain(None),
        handed(Some(0), &[(1, 100), (3, 2000), (2, 10)]),
        plain(Some(1)),
        handed(Some(2), &[(3, 5), (2, 20_000), (1, 1)]),
    ];
    let p = Params::new(61, conns);
    let want = p.targets();
    let o = run(p);
    let c = &o.counters;
    for i in [1, 3] {
        assert_eq!(o.served_by[i], want[i], "conn {i}\n{}", o.summary);
    }
    assert_all_accepted(&o);
    assert!(o.accepted >= 4, "{}", o.summary);
    assert_eq!(c.event_count(FlowEvent::Reopened), 3, "{}", o.summary);
    assert_eq!(c.drop_count(DropReason::ReuseRefused), 0, "{}", o.summary);
    assert!(
        o.time_wait_recycled >= 1,
        "no node took the SYN out of TIME-WAIT\n{}",
        o.summary
    );
}

/// Tuple reuse on a faulty network: every response arrives right and every hand-off ends
/// completed or rolled back.
#[test]
fn tuple_reuse_with_faults() {
    for seed in 62..65 {
        let port = 41_014;
        // The next connection 2.5 s after the previous one ended: every old node is retired
        // by then, even after lost FINs (a reopen cuts the retirement short, see
        // `golden::a_reopened_tuple_still_retires_the_old_node`), and the switch still holds
        // the tuple in TIME-WAIT.
        let conns = (0..3usize)
            .map(|i| ConnSpec {
                start_ms: if i == 0 { 1 } else { 2500 },
                reqs: closing(script(&[(1 + i as u8, 700), (3 - i as u8, 9000)])),
                lport: Some(port),
                after: i.checked_sub(1),
                ..ConnSpec::default()
            })
            .collect();
        let mut p = Params::new(seed, conns);
        p.faults = faulty(200, 200, 300);
        let o = run(p);
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
        assert!(
            o.counters.event_count(FlowEvent::Reopened) >= 1,
            "{}",
            o.summary
        );
    }
}

/// Hand-offs of one keep-alive connection: `KNITS_E2E_HANDOFFS`, else 1,000.
fn many_handoffs() -> usize {
    std::env::var("KNITS_E2E_HANDOFFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// One keep-alive connection handed off on every request (1,000 times, owners 1 -> 2 -> 3 ->
/// 1 ...; each request waits for the previous response): every response comes from the node
/// it names, every hand-off is accepted and completes, and the switch holds the same few
/// entries throughout (retired bindings leave the history at once, their legs the table).
/// The hosts acknowledge at once (no delayed ACK).
#[test]
fn a_thousand_handoffs_on_one_connection() {
    thousand_handoffs(70, Some(0));
}

/// The same with smoltcp's delayed ACK (10 ms) on every host: the client moves on long before
/// an old node acknowledges the last request it was sent, so several old nodes are being
/// retired at once. Still no hand-off may be refused, and the history stays small.
#[test]
fn a_thousand_handoffs_with_delayed_acks() {
    thousand_handoffs(71, None);
}

fn thousand_handoffs(seed: u64, ack_delay_ms: Option<u64>) {
    let n = many_handoffs();
    let t: Vec<(u8, u32)> = (0..=n)
        .map(|i| (1 + (i % 3) as u8, [0, 1, 100, 1460, 3000, 20_000][i % 6]))
        .collect();
    let mut p = Params::new(
        seed,
        vec![ConnSpec {
            start_ms: 1,
            reqs: script(&t),
            ..ConnSpec::default()
        }],
    );
    p.ack_delay_ms = ack_delay_ms;
    p.reap = true;
    p.deadline_ms = 600_000;
    let want = p.targets();
    let t0 = std::time::Instant::now();
    let o = run(p);
    eprintln!(
        "{n} hand-offs: {} ms virtual, {:?} wall; at most {} flows, {} sessions, {} bindings",
        o.clients_done_ms,
        t0.elapsed(),
        o.max_flows,
        o.max_sessions,
        o.max_bindings
    );
    // The summary lists every request: only its first lines go into a failure message.
    let head = o.summary.lines().take(3).collect::<Vec<_>>().join("\n");
    let wrong: Vec<usize> = (0..want[0].len())
        .filter(|&i| o.served_by[0].get(i) != Some(&want[0][i]))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} responses from the wrong node (the first: request {})\n{head}",
        wrong.len(),
        want[0].len(),
        wrong[0]
    );
    let mut codes: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &o.codes {
        *codes.entry(c.name()).or_default() += 1;
    }
    assert_eq!(
        (o.accepted, o.completed, o.rolled_back),
        (n as u64, n as u64, 0),
        "hand-offs; answers {codes:?}\n{head}"
    );
    let c = &o.counters;
    assert_eq!(c.event_count(FlowEvent::BindingRemoved), n as u64, "{head}");
    assert_eq!(c.event_count(FlowEvent::BindingForced), 0, "{head}");
    assert!(
        o.max_flows <= 4 && o.max_sessions <= 1,
        "the switch grew: {} flows, {} sessions, {} bindings\n{head}",
        o.max_flows,
        o.max_sessions,
        o.max_bindings
    );
}

/// A client without timestamps (its SYNs offer none), nodes with them: hand-offs are accepted,
/// and the targets' timestamps never reach the client (`run` checks every frame it is given).
#[test]
fn client_without_timestamps() {
    let reqs = script(&[(1, 1000), (2, 50_000), (3, 1), (1, 20_000)]);
    let mut p = Params::new(
        80,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    p.client_ts = false;
    let o = run_exact(p, 3);
    assert!(
        o.counters.event_count(FlowEvent::TsStripped) > 0,
        "{}",
        o.summary
    );
}

/// A client without SACK (the option is taken out of its SYNs on its link: smoltcp always
/// offers it), nodes with it; and a client with neither. Uploads under loss make the targets
/// send SACK blocks about the client's bytes on their legs: none may reach the client.
#[test]
fn client_without_sack_or_timestamps_with_faults() {
    let mut sack_stripped = 0;
    // The switch's default hand-off time-out (5 s): with the tests' 1 s, most of these
    // uploads are rolled back, and hang (`regression_rollback_after_the_target_acknowledged_
    // client_bytes`).
    for (seed, ts) in [(80, true), (84, false), (86, true), (90, false)] {
        let o = run(uploads_without_sack(seed, ts, Some(5000)));
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
        assert!(o.completed >= 1, "{}", o.summary);
        sack_stripped += o.counters.event_count(FlowEvent::SackStripped);
    }
    assert!(
        sack_stripped > 0,
        "no SACK block was ever on its way to the client"
    );
}

/// Uploads (30,000 bytes with every request) from a client without SACK, with timestamps or
/// not, on a faulty network.
fn uploads_without_sack(seed: u64, ts: bool, handoff_ms: Option<u64>) -> Params {
    let mut reqs = script(&[(1, 100), (2, 20_000), (3, 3000), (1, 0), (2, 1460)]);
    for r in &mut reqs {
        r.body = 30_000;
    }
    let mut p = Params::new(
        seed,
        vec![ConnSpec {
            start_ms: 1,
            reqs,
            ..ConnSpec::default()
        }],
    );
    p.client_sack = false;
    p.client_ts = ts;
    p.faults = faulty(300, 200, 400);
    p.handoff_ms = handoff_ms;
    p
}

/// Uploads whose hand-off is rolled back after the target's ACK of client bytes reached the
/// client: those bytes are lost, the old node waits for them forever (see
/// `golden::no_ack_from_a_pending_target_reaches_the_client`). Seed 82: request 1001 (its
/// 30,000-byte upload half in) hangs after the roll-back; the random schedule (no loss, only
/// duplication and reordering) hangs the same way on request 1001.
#[test]
fn regression_rollback_after_the_target_acknowledged_client_bytes() {
    run(uploads_without_sack(82, true, None));
    let conns = vec![
        ConnSpec {
            start_ms: 30,
            reqs: vec![
                Req {
                    target: 1,
                    size: 22425,
                    ..Req::default()
                },
                Req {
                    target: 2,
                    body: 4927,
                    ..Req::default()
                },
                Req {
                    target: 3,
                    wait: true,
                    ..Req::default()
                },
                Req {
                    target: 2,
                    size: 2378,
                    wait: true,
                    ..Req::default()
                },
                Req {
                    target: 2,
                    size: 1,
                    ..Req::default()
                },
            ],
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 38,
            reqs: vec![
                Req {
                    target: 1,
                    size: 2567,
                    body: 3122,
                    ..Req::default()
                },
                Req {
                    target: 2,
                    size: 1460,
                    wait: true,
                    ..Req::default()
                },
                Req {
                    target: 1,
                    size: 1460,
                    wait: true,
                    ..Req::default()
                },
            ],
            half_close: true,
            ..ConnSpec::default()
        },
    ];
    run(regression(
        17503363479917510540,
        (0, 175, 427),
        conns,
        [4148130509, 2088344064, 2033157721, 4070198046],
        [1417983243, 4285365716, 845028602, 1346255721],
    ));
}

/// A client without timestamps on a faulty network, pipelined.
#[test]
fn client_without_timestamps_with_faults() {
    for seed in 85..88 {
        let reqs = pipelined(&[(1, 1), (2, 20_000), (2, 0), (3, 5000), (1, 1460)]);
        let mut p = Params::new(
            seed,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                ..ConnSpec::default()
            }],
        );
        p.client_ts = false;
        p.faults = faulty(300, 300, 500);
        let o = run(p);
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
    }
}

/// A half-closed client: its FIN follows its requests at once, before the node decides. The
/// hand-off is accepted, the target gets the request and the FIN, the client the whole
/// response and a clean close (its socket ends in TIME-WAIT, the server's in CLOSED).
#[test]
fn half_closed_client() {
    let conns = vec![
        // One request for another node: the FIN arrives with it.
        ConnSpec {
            start_ms: 1,
            reqs: script(&[(2, 30_000)]),
            half_close: true,
            ..ConnSpec::default()
        },
        // Pipelined: the first node serves one, the FIN follows the one handed off.
        ConnSpec {
            start_ms: 3,
            reqs: pipelined(&[(3, 100), (3, 0), (1, 70_000)]),
            half_close: true,
            ..ConnSpec::default()
        },
    ];
    let p = Params::new(90, conns);
    let want = p.targets();
    let o = run(p);
    assert_eq!(o.served_by, want, "served by the wrong node\n{}", o.summary);
    assert_all_accepted(&o);
    assert!(o.accepted >= 2, "{}", o.summary);
    // Every hand-off came after the client's FIN, which went on each time.
    assert_eq!(
        o.counters.event_count(FlowEvent::ClientFinPassed),
        o.accepted,
        "{}",
        o.summary
    );
}

/// The old node of a half-closed client has the client's FIN already: it must not be sent
/// the FIN again and again after it has closed c1 (e90d1bd sent it 8 times, each answered by
/// the closed socket's RST, dropped as `out_of_window`, and retired the binding only when the
/// retries ran out: 24 faked FINs and 15 RSTs for this run's 3 hand-offs).
#[test]
fn half_closed_client_old_node_is_told_once() {
    let conns = vec![
        ConnSpec {
            start_ms: 1,
            reqs: script(&[(2, 30_000)]),
            half_close: true,
            ..ConnSpec::default()
        },
        ConnSpec {
            start_ms: 3,
            reqs: pipelined(&[(3, 100), (3, 0), (1, 70_000)]),
            half_close: true,
            ..ConnSpec::default()
        },
    ];
    let o = run(Params::new(90, conns));
    let c = &o.counters;
    let fins = c.generated_count(Generated::FakeClientFin);
    let dropped = c.drop_count(DropReason::OutOfWindow);
    assert!(
        fins <= o.accepted && dropped == 0,
        "{fins} faked FINs and {dropped} frames dropped out of window for {} hand-offs\n{}",
        o.accepted,
        o.summary
    );
}

/// Half-closed clients on a faulty network, with uploads.
#[test]
fn half_closed_client_with_faults() {
    for seed in 91..94 {
        let mut reqs = pipelined(&[(1, 500), (2, 20_000)]);
        reqs[1].body = 5000;
        let mut p = Params::new(
            seed,
            vec![ConnSpec {
                start_ms: 1,
                reqs,
                half_close: true,
                ..ConnSpec::default()
            }],
        );
        p.faults = faulty(200, 200, 300);
        let o = run(p);
        assert!(o.completed + o.rolled_back <= o.accepted, "{}", o.summary);
    }
}

/// Clients that end as wrk ends a TLS connection: the server closes first (`Connection:
/// close`), then the client sends its close_notify and resets at once, before the server has
/// acknowledged it. Handed-off and plain connections alike leave the switch's table within
/// TIME-WAIT: the RST closes the client's connection and the leg it is forwarded on. (Before,
/// a handed-off connection's leg stayed in FIN-WAIT for its four-minute time-out: on the leg
/// the RST was neither at the target's last acknowledgment nor, on a node-to-node flow, taken
/// as the sender's own next sequence number.)
#[test]
fn client_resets_after_its_close_notify() {
    let conns = (0..4)
        .map(|i| ConnSpec {
            start_ms: 1 + 2 * i as u64,
            // Two handed off (one of them twice), one served where it landed, one pipelined.
            reqs: closing(match i {
                0 => script(&[(2, 30_000)]),
                1 => script(&[(2, 500), (3, 20_000)]),
                2 => script(&[(1, 1000)]),
                _ => pipelined(&[(1, 100), (3, 5000)]),
            }),
            notify_then_reset: true,
            ..ConnSpec::default()
        })
        .collect();
    let p = Params::new(95, conns);
    let want = p.targets();
    let o = run(p);
    assert_eq!(o.served_by, want, "served by the wrong node\n{}", o.summary);
    assert_all_accepted(&o);
    assert!(o.accepted >= 3, "{}", o.summary);
    assert_eq!(
        o.open_at_quiet, 0,
        "flows left open when every socket had closed\n{}",
        o.summary
    );
}
