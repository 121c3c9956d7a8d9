//! Running a scenario and checking the invariants.

use std::collections::HashMap;

use knits_core::counters::Counters;
use knits_core::table::TcpState;
use knits_core::wire::control::ReplyCode;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;

use crate::fabric::Fabric;
use crate::net::{Key4, TIME_WAIT_MS, node_of};
use crate::params::{Params, request_id};

#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) accepted: u64,
    pub(crate) completed: u64,
    pub(crate) rolled_back: u64,
    /// For each client connection, which node served each response.
    pub(crate) served_by: Vec<Vec<u8>>,
    /// Virtual time at which every client connection had finished.
    pub(crate) clients_done_ms: u64,
    /// Every reply code the nodes received (retransmitted answers once).
    pub(crate) codes: Vec<ReplyCode>,
    /// The switch's counters at the end.
    pub(crate) counters: Counters,
    /// The most flows, sessions, and bindings of one session after any round or poll.
    pub(crate) max_flows: usize,
    pub(crate) max_sessions: usize,
    pub(crate) max_bindings: usize,
    /// SYNs that ended a host's TIME-WAIT on their tuple.
    pub(crate) time_wait_recycled: u64,
    /// Flows still open or closing (not in TIME-WAIT) when every host socket had closed:
    /// entries only a time-out would remove.
    pub(crate) open_at_quiet: usize,
    pub(crate) summary: String,
}

pub(crate) fn run(p: Params) -> Outcome {
    let deadline = p.deadline_ms;
    let mut f = Fabric::new(p);
    let mut now = 0;
    let mut clients_done_at = None;
    let mut drained_at = None;
    let mut quiet_at = None;
    let mut open_at_quiet = 0;
    loop {
        now += 1;
        f.tick(now);
        if clients_done_at.is_none() && f.client().all_done() {
            clients_done_at = Some(now);
        }
        if let Some(t) = clients_done_at {
            let empty = f.sw.flow_count() == 0 && f.sw.session_count() == 0;
            if empty && drained_at.is_none() {
                drained_at = Some(now);
            }
            // The last host socket of the run is closed (or in TIME-WAIT): the switch's
            // TIME-WAIT for the connections starts no later than this.
            if quiet_at.is_none() && f.hosts_quiet() {
                quiet_at = Some(now);
                let by_state = f.sw.flows_by_state();
                open_at_quiet = by_state[..TcpState::TimeWait as usize].iter().sum();
            }
            // Run on until every host is quiet too, so that a late retransmission (an old
            // node's FIN whose faked final ACK was lost) still has to be answered; 30 s
            // covers smoltcp's retransmission back-off.
            if empty && f.hosts_quiet() || now - t > TIME_WAIT_MS + 30_000 {
                break;
            }
        }
        let errs = f.client().errors.len()
            + f.nodes().map(|n| n.errors.len()).sum::<usize>()
            + f.violations.len();
        if now >= deadline || errs > 0 && clients_done_at.is_none() && now > 5000 {
            break;
        }
    }
    let mut problems = vec![];
    // The table is empty within TIME-WAIT (and 1 s of slack) after the last host socket
    // finished (which, with loss, may be long after the client did: a lost final ACK keeps the
    // server in LAST-ACK).
    let last_close = clients_done_at.max(quiet_at);
    match (last_close, drained_at) {
        (Some(t), Some(d)) if d <= t + TIME_WAIT_MS + 1000 => {}
        (Some(t), Some(d)) => problems.push(format!(
            "the table drained {} ms after the last host socket closed (TIME-WAIT is {TIME_WAIT_MS} ms)",
            d - t
        )),
        (Some(_), None) if f.only_hung_legs_left() => {}
        (Some(_), None) => problems.push(format!(
            "the table never drained: {} flows, {} sessions",
            f.sw.flow_count(),
            f.sw.session_count()
        )),
        (None, _) => {}
    }
    problems.extend(f.client().errors.iter().cloned());
    for n in f.nodes() {
        problems.extend(n.errors.iter().cloned());
    }
    problems.extend(f.violations.iter().take(20).cloned());
    if now >= deadline {
        problems.push(format!(
            "deadline: not finished after {deadline} virtual ms"
        ));
    }
    let c = f.sw.counters().clone();
    let rolled_back = c.handoffs_rolled_back;
    // RSTs that hit a live connection: never at the client, and at a node only on a
    // node-to-node leg of a rolled-back hand-off (both ends of the new leg are reset). An RST
    // that meets no socket or one in TIME-WAIT is a stack's answer to a duplicate after the
    // close, as on any network.
    // A refused hand-off's new leg is reset by its node, as knits-proxy does: its target sees
    // the RST, as intended.
    let refused: Vec<Key4> = f
        .nodes()
        .flat_map(|n| n.refused_legs.iter().copied())
        .collect();
    // A client that resets after its last record (`notify_then_reset`) resets its server's
    // socket, closed first, on purpose.
    let client_resets = f.client().conns.iter().filter(|c| c.reset).count();
    let mut leg_rsts = 0;
    for (h, o) in f.obs.iter().enumerate() {
        for (t, k, st, _) in &o.rst_rx {
            if client_resets > 0
                && h != 0
                && matches!(st, Some(tcp::State::FinWait1 | tcp::State::FinWait2))
            {
                continue;
            }
            // Only synchronized connections count: a half-open one (SYN-RECEIVED after a
            // duplicated SYN met a second listener) is reset by its peer as on any network.
            // And LAST-ACK: a FIN resent after the peer's TIME-WAIT ended (smoltcp's is 10 s,
            // a FIN's fifth retransmission comes 31 s after the first) meets an RST on any
            // network; what the host sent before has arrived (its receiver checks).
            let live = st.is_some_and(|st| {
                !matches!(
                    st,
                    tcp::State::TimeWait
                        | tcp::State::SynSent
                        | tcp::State::SynReceived
                        | tcp::State::LastAck
                )
            });
            if !live || refused.contains(&(k.2, k.3, k.0, k.1)) {
                continue;
            }
            let node_leg = node_of(k.0).is_some() && node_of(k.2).is_some();
            if h == 0 || !node_leg || rolled_back == 0 {
                problems.push(format!(
                    "t={t} host {h} received an RST on {}:{} <- {}:{} in {st:?}",
                    k.0, k.1, k.2, k.3
                ));
            } else {
                leg_rsts += 1;
            }
        }
    }
    if leg_rsts > 2 * rolled_back {
        problems.push(format!(
            "{leg_rsts} RSTs on node legs for {rolled_back} roll-backs"
        ));
    }
    let resets: usize = f
        .nodes()
        .flat_map(|n| n.reset_keys.iter())
        .filter(|k| !refused.contains(&(k.2, k.3, k.0, k.1)))
        .count();
    if resets as u64 > rolled_back + client_resets as u64 {
        problems.push(format!(
            "{resets} handed-off connections reset at their target for {rolled_back} roll-backs"
        ));
    }
    // The ISNs asked for are the ISNs used (first connection of each host).
    for (h, o) in f.obs.iter().enumerate() {
        if let Some((k, isn)) = o.syn_isn.first()
            && *isn != f.p.isn[h]
        {
            problems.push(format!("host {h}: first ISN {isn:#x} on {k:?}, asked for {:#x} (smoltcp's ISN generator changed?)", f.p.isn[h]));
        }
    }
    // Every request served exactly once; twice only when a hand-off was rolled back after its
    // target had read (and maybe answered) what it was handed, its answer never reaching the
    // client (which checks that it got each response exactly once).
    let mut served: HashMap<u32, usize> = HashMap::new();
    for n in f.nodes() {
        for id in &n.served {
            *served.entry(*id).or_default() += 1;
        }
    }
    for (ci, spec) in f.p.conns.iter().enumerate() {
        for i in 0..spec.reqs.len() {
            let id = request_id(ci, i);
            let n = served.remove(&id).unwrap_or(0);
            if n == 0 || n > 1 + rolled_back as usize {
                problems.push(format!("request {id} served {n} times"));
            }
        }
    }
    if !served.is_empty() {
        problems.push(format!("unknown requests served: {served:?}"));
    }
    // Every socket ends closed (or in TIME-WAIT), none half-open; except, on a faulty network,
    // the two ends of a leg to a hung target (the switch's one RST to it may be lost, and a node
    // that closes such a leg after a refusal, e.g. `not_established` when the leg's last
    // handshake ACK was reordered behind the request, waits for it forever: smoltcp never
    // gives up).
    let rolled_back_legs: Vec<Key4> = f
        .nodes()
        .flat_map(|n| n.rolled_back_legs.iter().copied())
        .collect();
    let hung: Vec<Key4> = f
        .nodes()
        .flat_map(|n| n.muted.iter().flat_map(|k| [*k, (k.2, k.3, k.0, k.1)]))
        .collect();
    for (h, host) in f.hosts.iter().enumerate() {
        for (_, s) in host.sockets.iter() {
            if let smoltcp::socket::Socket::Tcp(s) = s {
                let st = s.state();
                let k = s.local_endpoint().zip(s.remote_endpoint()).map(|(l, r)| {
                    let (IpAddress::Ipv4(la), IpAddress::Ipv4(ra)) = (l.addr, r.addr);
                    (la, l.port, ra, r.port)
                });
                if k.is_some_and(|k| hung.contains(&k)) && f.p.faults.any() {
                    continue;
                }
                // The target's end of a rolled-back leg whose one RST was lost while it had
                // nothing to send: no packet of it reaches the switch, which cannot tell it
                // again. Its application's idle time-out closes it.
                if st == tcp::State::Established
                    && f.p.faults.loss > 0
                    && k.is_some_and(|k| rolled_back_legs.contains(&(k.2, k.3, k.0, k.1)))
                {
                    continue;
                }
                if !matches!(
                    st,
                    tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen
                ) {
                    problems.push(format!(
                        "host {h}: socket {:?} <-> {:?} left in {st}",
                        s.local_endpoint(),
                        s.remote_endpoint()
                    ));
                }
            }
        }
    }
    if c.expired != 0 {
        problems.push(format!(
            "{} flow entries left by idle expiry instead of closing",
            c.expired
        ));
    }
    let summary = f.summary();
    if std::env::var_os("KNITS_E2E_SUMMARY").is_some() {
        eprintln!("{summary}");
    }
    if !problems.is_empty() {
        panic!(
            "seed {}: {} problems:\n{}\n{summary}\nparams: {:?}",
            f.p.seed,
            problems.len(),
            problems.join("\n"),
            f.p
        );
    }
    Outcome {
        accepted: c.handoffs[ReplyCode::Accepted.index()],
        completed: c.handoffs_completed,
        rolled_back,
        served_by: f
            .client()
            .conns
            .iter()
            .map(|c| c.served_by.clone())
            .collect(),
        clients_done_ms: clients_done_at.unwrap_or(now),
        codes: f.nodes().flat_map(|n| n.codes.iter().copied()).collect(),
        counters: c,
        max_flows: f.max_flows,
        max_sessions: f.max_sessions,
        max_bindings: f.max_bindings,
        time_wait_recycled: f.time_wait_recycled,
        open_at_quiet,
        summary,
    }
}

/// Runs a scenario without faults and checks that every request was served by the node it named
/// and that the expected number of hand-offs happened and completed.
pub(crate) fn run_exact(p: Params, handoffs: u64) -> Outcome {
    let want = p.targets();
    let o = run(p);
    assert_eq!(o.served_by, want, "served by the wrong node\n{}", o.summary);
    assert_eq!(
        (o.accepted, o.completed, o.rolled_back),
        (handoffs, handoffs, 0),
        "hand-offs\n{}",
        o.summary
    );
    // Without loss nothing waits for a retransmission time-out (smoltcp's is at least 1 s).
    assert!(
        o.clients_done_ms < 1000,
        "took {} ms without faults\n{}",
        o.clients_done_ms,
        o.summary
    );
    o
}
