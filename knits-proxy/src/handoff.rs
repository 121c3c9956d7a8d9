//! The hand-off of a held connection (c1) to a peer, paper III.B steps 3-10 as seen by the
//! node that gives the connection away:
//!
//! 1. Wait until every byte this node sent on c1 is acknowledged (SIOCOUTQ = 0), so the switch
//!    can place the response anchor (`sent`) behind everything the client has.
//! 2. Open c2 to the target with the MSS c1 uses ("Node A opens a connection (c2) to Node B
//!    with MSS equal to the client's MSS on the (c1) connection"), or take a pooled one.
//! 3. Send the signed request with the anchors to the switch, retrying until a reply.
//! 4. Accepted: forward every byte read from c1 but not consumed on c2 ("Node A ... forwards
//!    original request to node B on (c2)"), keep copying c1 to c2 until c1 ends (the switch
//!    fakes the client's FIN, step 8; or the client half-closed), then send c2's FIN ("Node A
//!    ... closes (c2) link", step 10), wait until it is acknowledged (by the switch, or by the
//!    target when it stands for a half-closed client's FIN) and reset c2 (SO_LINGER 0), so
//!    this node keeps no TIME-WAIT per hand-off and its ephemeral ports never run out. The
//!    switch absorbs the reset. Nothing is ever written to c1 again.
//! 5. Refused or no reply: give c2 back to the pool when the refusal says nothing against
//!    it, else reset it (the switch then drops its entry at once), and let the caller serve
//!    the request itself; c1's buffer is untouched, so nothing the client sent is lost or
//!    reordered.
//! 6. Accepted, then c2 reset before c1 ended: the switch rolled the hand-off back (the target
//!    never acknowledged, docs/protocol.md "Roll-back"). The forwarded bytes are put back in
//!    front of c1's buffer and the request is served locally, as after a refusal.
//!
//! With a sharded switch the new leg must land in c1's shard: [`crate::leg`] says why and how.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use knits_core::wire::control::{ReplyCode, RequestRepr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Peer, Timeouts};
use crate::conn::Conn;
use crate::control::{ControlClient, ControlError};
use crate::metrics::{FailReason, HandoffPhase, Metrics};
use crate::pool::C2Pool;
use crate::sockopt;

/// Re-exported from [`crate::leg`], where they live (the pool uses them too).
pub use crate::leg::{SHARD_PORT_TRIES, SHARD_PORTS, ShardBind, connect_leg};

/// What the hand-off machinery needs, shared by all connections.
#[derive(Debug)]
pub struct HandoffContext {
    /// The control channel.
    pub control: ControlClient,
    /// Pre-connected new legs, if enabled.
    pub pool: Option<Arc<C2Pool>>,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Shards of the switch (1: any source port will do).
    pub shards: u32,
}

/// With a sharded switch: further requests after a `not_established` answer (1, 2, 4 ms apart).
pub const NOT_ESTABLISHED_RETRIES: usize = 3;

/// Further requests after a `too_many_hops` or `busy` answer (1, 2, 4, 8 ms apart).
pub const BUSY_RETRIES: usize = 4;

/// What became of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The switch spliced the connection to the target; this node is done with it (c1 was
    /// read to its end and must now be dropped without writing).
    HandedOff,
    /// No hand-off: serve the request locally and go on with the connection.
    Local,
}

/// Tries to hand `c1` off to `peer` at the request that starts at `c1`'s first buffered byte.
pub async fn hand_off(ctx: &HandoffContext, c1: &mut Conn<TcpStream>, peer: &Peer) -> Outcome {
    let m = &ctx.metrics;
    let t = &ctx.timeouts;
    m.handoffs_initiated.fetch_add(1, Relaxed);
    let start = Instant::now();
    let fail = |r: FailReason| {
        m.failed(r);
        tracing::debug!(peer = %peer.id, reason = r.name(), "hand-off not possible; serving locally");
        Outcome::Local
    };

    let s = c1.get_ref();
    let (Some(held_peer), Some(held_local)) = (
        s.peer_addr().ok().and_then(sockopt::endpoint),
        s.local_addr().ok().and_then(sockopt::endpoint),
    ) else {
        return fail(FailReason::NotIpv4);
    };

    // The time of each phase goes to its histogram (`knits_proxy_handoff_phase_seconds`).
    let mut mark = start;
    let phase = |p: HandoffPhase, mark: &mut Instant| {
        let now = Instant::now();
        m.handoff_phases[p as usize].observe(now - *mark);
        *mark = now;
    };

    // Step 1: the response anchor must lie behind everything the client acknowledged.
    match sockopt::wait_acked(s, t.unacked).await {
        Ok(true) => {}
        Ok(false) | Err(_) => return fail(FailReason::Unacked),
    }
    phase(HandoffPhase::Unacked, &mut mark);

    // Step 2: c2 with c1's MSS.
    let Ok(held_mss) = sockopt::mss(s) else {
        return fail(FailReason::Mss);
    };
    let mss = sockopt::mss_for_new_leg(held_mss);
    // A sharded switch: c2 must land in c1's shard (module docs).
    let bind = ShardBind::for_held(held_peer, held_local, ctx.shards);
    let pooled = ctx
        .pool
        .as_ref()
        .and_then(|p| p.take_bound(peer.addr, mss, bind));
    let c2 = match pooled {
        Some(c) => c,
        None => match connect_leg(peer.addr, Some(mss), bind, t.connect).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(peer = %peer.id, addr = %peer.addr, error = %e, "cannot open c2");
                return fail(FailReason::Connect);
            }
        },
    };
    let (Some(new_local), Some(new_remote)) = (
        c2.local_addr().ok().and_then(sockopt::endpoint),
        c2.peer_addr().ok().and_then(sockopt::endpoint),
    ) else {
        return fail(FailReason::NotIpv4);
    };
    phase(HandoffPhase::Leg, &mut mark);

    // Step 3: the signed request with the anchors.
    let repr = RequestRepr {
        key_id: ctx.control.key_id(),
        counter: 0, // assigned by the control client
        held_peer,
        held_local,
        new_local,
        new_remote,
        consumed: c1.consumed(),
        sent: c1.sent(),
    };
    let mut answer = ctx.control.request(repr).await;
    // The connection's history is full of old nodes still being retired (a keep-alive
    // client that moves on every request can outrun the retirements by a few round trips),
    // or its previous hand-off is not confirmed yet: both pass within milliseconds.
    let mut pause = Duration::from_millis(1);
    for _ in 0..BUSY_RETRIES {
        if !matches!(&answer, Ok(a) if matches!(a.reply.code, ReplyCode::TooManyHops | ReplyCode::Busy))
        {
            break;
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        answer = ctx.control.request(repr).await;
    }
    if ctx.shards > 1 {
        // A sharded switch may see the request before c2's handshake ACK: they leave this node
        // on different TAP queues and may reach c2's shard by different paths. The answer is
        // then `not_established`, and a moment later the request is fine.
        let mut pause = Duration::from_millis(1);
        for _ in 0..NOT_ESTABLISHED_RETRIES {
            if !matches!(&answer, Ok(a) if a.reply.code == ReplyCode::NotEstablished) {
                break;
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
            answer = ctx.control.request(repr).await;
        }
    }
    // The pool is topped up after the request is on c2 (accepted) or now (not): the refill's
    // handshake must not compete with this hand-off's latency-critical part.
    let refill = || {
        if let Some(pool) = &ctx.pool {
            pool.clone().refill_bound(peer.addr, mss, bind);
        }
    };
    if !matches!(&answer, Ok(a) if a.reply.code == ReplyCode::Accepted) {
        refill();
    }
    let answer = match answer {
        Ok(a) => a,
        Err(ControlError::TimedOut { attempts }) => {
            tracing::warn!(peer = %peer.id, attempts, "switch did not answer the hand-off; serving locally");
            linger_then_close(c2, t.abandon_linger);
            return fail(FailReason::Timeout);
        }
        Err(ControlError::Encode) => return fail(FailReason::Send),
    };
    if answer.reply.code != ReplyCode::Accepted {
        let code = answer.reply.code;
        m.refused(code);
        tracing::debug!(peer = %peer.id, code = code.name(), "switch refused the hand-off; serving locally");
        // A refusal about the held connection or the switch's room leaves the new leg as new;
        // one about the leg itself (unknown, not established, options) does not.
        let reusable = matches!(
            code,
            ReplyCode::TooManyHops
                | ReplyCode::Busy
                | ReplyCode::AnchorsOutOfRange
                | ReplyCode::TableFull
                | ReplyCode::UnknownConnection
                | ReplyCode::NotOwner
        );
        match &ctx.pool {
            Some(pool) if reusable => pool.put_back(peer.addr, mss, bind, c2),
            _ => sockopt::reset_close(c2),
        }
        return Outcome::Local;
    }
    m.handoffs_accepted.fetch_add(1, Relaxed);
    m.handoff_latency.observe(start.elapsed());
    phase(HandoffPhase::Control, &mut mark);
    tracing::debug!(
        peer = %peer.id,
        consumed = repr.consumed,
        sent = repr.sent,
        hops = answer.reply.hops,
        attempts = answer.attempts,
        "hand-off accepted"
    );

    // Step 4: forward, drain, close. Never write to c1 from here on.
    match forward(c1, c2, t, m, refill).await {
        Ok(Forwarded::Done) => Outcome::HandedOff,
        Ok(Forwarded::RolledBack(copy)) => {
            // The switch reset the new leg: the hand-off was rolled back and c1 is ours again.
            // The client's bytes after the splice point come back to this node by
            // retransmission; the ones already read are given back to the buffer.
            c1.unconsume(&copy);
            m.failed(FailReason::RolledBack);
            tracing::warn!(peer = %peer.id, "switch rolled the hand-off back; serving locally");
            Outcome::Local
        }
        Err(e) => {
            m.failed(FailReason::Broken);
            tracing::warn!(peer = %peer.id, error = %e, "forwarding after an accepted hand-off failed");
            Outcome::HandedOff
        }
    }
}

/// Most forwarded bytes kept to recover from a roll-back. After acceptance only what the
/// node's kernel had received before the splice point arrives on c1 (later client bytes go to
/// the target), so this is bounded by the receive buffer in practice.
pub const MAX_RECOVERY: usize = 16 << 20;

/// How the forwarding phase ended.
enum Forwarded {
    /// c1 ended (the switch's faked client FIN) and c2 was closed: the hand-off is complete.
    Done,
    /// c2 was reset before c1 ended: the hand-off was rolled back. Holds every byte forwarded.
    RolledBack(Vec<u8>),
}

/// After acceptance: copies c1's unconsumed and further bytes to c2 until c1 ends, then closes
/// c2 and waits for its end. A reset of c2 before c1 ends is the switch's roll-back.
async fn forward(
    c1: &mut Conn<TcpStream>,
    mut c2: TcpStream,
    t: &Timeouts,
    m: &Metrics,
    after_first_write: impl FnOnce(),
) -> io::Result<Forwarded> {
    let mut after_first_write = Some(after_first_write);
    let mut copy: Vec<u8> = Vec::new();
    let mut recoverable = true;
    let mut c2_open = true;
    let mut probe = [0u8; 1024];
    let mut first = Some(Instant::now());
    loop {
        let pending = c1.buffered().len();
        if pending > 0 {
            if c2.write_all(c1.buffered()).await.is_err() {
                return rolled_back(copy, recoverable);
            }
            if let Some(t0) = first.take() {
                m.handoff_phases[HandoffPhase::Forward as usize].observe(t0.elapsed());
            }
            if let Some(f) = after_first_write.take() {
                f();
            }
            if recoverable && copy.len() + pending <= MAX_RECOVERY {
                copy.extend_from_slice(c1.buffered());
            } else {
                recoverable = false;
            }
            c1.consume(pending);
        }
        tokio::select! {
            r = c1.fill_within(t.drain) => match r {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(e),
            },
            r = c2.read(&mut probe), if c2_open => match r {
                Err(_) => return rolled_back(copy, recoverable),
                // The target's FIN never reaches this node (it goes to the client); ignore.
                Ok(0) => c2_open = false,
                Ok(_) => {}
            },
        }
    }
    if let Some(f) = after_first_write.take() {
        f();
    }
    // c1 ended: the binding is live (the switch fakes the FIN only then), or the client
    // half-closed. Send c2's FIN: the switch acknowledges it (or passes it on as the client's
    // own FIN, and the target acknowledges it). Once it is acknowledged, every byte this node
    // sent on c2 is with the target: reset c2 so that it leaves no TIME-WAIT here.
    c2.shutdown().await?;
    // Nobody waits for this (the client already talks to the target): no spinning.
    match sockopt::wait_acked_lazily(&c2, t.c2_close).await {
        Ok(true) => {
            // The target has everything (the hand-off is confirmed: it can no longer be rolled
            // back). Nothing is written to c1 after a hand-off: close it now, so the switch
            // retires this node's side of the connection at once.
            let _ = c1.get_mut().shutdown().await;
        }
        _ => tracing::debug!("c2's FIN not acknowledged in time after the hand-off; resetting"),
    }
    sockopt::reset_close(c2);
    Ok(Forwarded::Done)
}

fn rolled_back(copy: Vec<u8>, recoverable: bool) -> io::Result<Forwarded> {
    if recoverable {
        Ok(Forwarded::RolledBack(copy))
    } else {
        Err(io::Error::other(
            "new leg reset after more forwarded bytes than can be recovered",
        ))
    }
}

/// Keeps an unused new leg open for `linger`, then resets it (see `Timeouts::abandon_linger`).
fn linger_then_close(c2: TcpStream, linger: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(linger).await;
        sockopt::reset_close(c2);
    });
}
