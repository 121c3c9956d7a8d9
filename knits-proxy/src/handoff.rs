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
//!    fakes the client's FIN, step 8), then close c2 ("Node A ... closes (c2) link", step 10)
//!    and wait for the switch's faked FIN/ACK. Nothing is ever written to c1 again.
//! 5. Refused or no reply: close c2 and let the caller serve the request itself; c1's buffer
//!    is untouched, so nothing the client sent is lost or reordered.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use knits_core::wire::control::{ReplyCode, RequestRepr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Peer, Timeouts};
use crate::conn::Conn;
use crate::control::{ControlClient, ControlError};
use crate::metrics::{FailReason, Metrics};
use crate::pool::C2Pool;
use crate::sockopt;

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
}

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

    // Step 1: the response anchor must lie behind everything the client acknowledged.
    match sockopt::wait_acked(s, t.unacked).await {
        Ok(true) => {}
        Ok(false) | Err(_) => return fail(FailReason::Unacked),
    }

    // Step 2: c2 with c1's MSS.
    let Ok(held_mss) = sockopt::mss(s) else {
        return fail(FailReason::Mss);
    };
    let mss = sockopt::mss_for_new_leg(held_mss);
    let pooled = ctx.pool.as_ref().and_then(|p| p.take(peer.addr, mss));
    let c2 = match pooled {
        Some(c) => c,
        None => match sockopt::connect_with_mss(peer.addr, Some(mss), t.connect).await {
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
    let answer = ctx.control.request(repr).await;
    if let Some(pool) = &ctx.pool {
        pool.clone().refill(peer.addr, mss);
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
        m.refused(answer.reply.code);
        tracing::debug!(peer = %peer.id, code = answer.reply.code.name(), "switch refused the hand-off; serving locally");
        drop(c2);
        return Outcome::Local;
    }
    m.handoffs_accepted.fetch_add(1, Relaxed);
    m.handoff_latency.observe(start.elapsed());
    tracing::debug!(
        peer = %peer.id,
        consumed = repr.consumed,
        sent = repr.sent,
        hops = answer.reply.hops,
        attempts = answer.attempts,
        "hand-off accepted"
    );

    // Step 4: forward, drain, close. Never write to c1 from here on.
    if let Err(e) = forward(c1, c2, t).await {
        m.failed(FailReason::Broken);
        tracing::warn!(peer = %peer.id, error = %e, "forwarding after an accepted hand-off failed");
    }
    Outcome::HandedOff
}

/// After acceptance: copies c1's unconsumed and further bytes to c2 until c1 ends, then closes
/// c2 and waits for its end.
async fn forward(c1: &mut Conn<TcpStream>, mut c2: TcpStream, t: &Timeouts) -> std::io::Result<()> {
    loop {
        let pending = c1.buffered().len();
        if pending > 0 {
            c2.write_all(c1.buffered()).await?;
            c1.consume(pending);
        }
        match c1.fill_within(t.drain).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    c2.shutdown().await?;
    let mut sink = [0u8; 4096];
    let wait_eof = async {
        loop {
            match c2.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    if tokio::time::timeout(t.c2_close, wait_eof).await.is_err() {
        tracing::debug!("c2 did not end in time after the hand-off; closing");
    }
    Ok(())
}

/// Keeps an unused new leg open for `linger`, then closes it (see `Timeouts::abandon_linger`).
fn linger_then_close(c2: TcpStream, linger: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(linger).await;
        drop(c2);
    });
}
