//! The client: one smoltcp socket per scripted connection, verifying every response byte.

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;

use crate::device::{Host, SockCfg, tcp_socket};
use crate::net::VIP;
use crate::params::{ConnSpec, request_id};
use crate::request::{body_byte, request_bytes};

#[derive(Debug)]
pub(crate) struct ClientConn {
    pub(crate) idx: usize,
    pub(crate) spec: ConnSpec,
    pub(crate) lport: u16,
    pub(crate) sock: Option<SocketHandle>,
    pub(crate) out: Vec<u8>,
    pub(crate) out_pos: usize,
    pub(crate) queued: usize,
    pub(crate) line: Vec<u8>,
    /// Response being received: (id, size, node, bytes of body received).
    pub(crate) cur: Option<(u32, u64, u8, u64)>,
    pub(crate) got: usize,
    pub(crate) served_by: Vec<u8>,
    /// The client's FIN is queued (half-close, before the responses are in).
    pub(crate) fin_sent: bool,
    /// The client reset the connection after its last record (`ConnSpec::notify_then_reset`).
    pub(crate) reset: bool,
    pub(crate) closed: bool,
    pub(crate) done: bool,
    pub(crate) done_at: Option<u64>,
}

pub(crate) struct ClientApp {
    pub(crate) conns: Vec<ClientConn>,
    pub(crate) rx: usize,
    pub(crate) tx: usize,
    pub(crate) cfg: SockCfg,
    pub(crate) errors: Vec<String>,
}

impl ClientApp {
    pub(crate) fn step(&mut self, now: u64, host: &mut Host) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.done {
                continue;
            }
            if c.sock.is_none() {
                let start = match c.spec.after {
                    None => Some(c.spec.start_ms),
                    Some(j) => self.conns[j].done_at.map(|t| t + c.spec.start_ms),
                };
                if start.is_some_and(|t| now >= t) {
                    let mut s = tcp_socket(0, self.rx, self.tx, self.cfg);
                    s.connect(host.iface.context(), (IpAddress::Ipv4(VIP), 80), c.lport)
                        .unwrap();
                    self.conns[i].sock = Some(host.sockets.add(s));
                }
                continue;
            }
            let c = &mut self.conns[i];
            let h = c.sock.unwrap();
            let s = host.sockets.get_mut::<tcp::Socket>(h);
            let st = s.state();
            if c.closed {
                // The step after the last record: it has gone out with the last poll, and the
                // RST follows it before the server's acknowledgment can have come back.
                if c.spec.notify_then_reset && !c.reset && st != tcp::State::Closed {
                    s.abort();
                    c.reset = true;
                    c.done = true;
                    c.done_at = Some(now);
                    continue;
                }
                if matches!(st, tcp::State::TimeWait | tcp::State::Closed) {
                    c.done = true;
                    c.done_at = Some(now);
                }
                continue;
            }
            if st == tcp::State::Closed && (c.got > 0 || c.out_pos > 0) {
                self.errors.push(format!(
                    "client conn {}: connection closed (reset) after {} responses",
                    c.idx, c.got
                ));
                c.done = true;
                c.done_at = Some(now);
                continue;
            }
            while c.queued < c.spec.reqs.len() && (!c.spec.reqs[c.queued].wait || c.got >= c.queued)
            {
                let r = c.spec.reqs[c.queued];
                c.out.extend(request_bytes(&r, request_id(c.idx, c.queued)));
                c.queued += 1;
            }
            if s.can_send() && c.out_pos < c.out.len() {
                c.out_pos += s.send_slice(&c.out[c.out_pos..]).unwrap();
            }
            let all_out = c.queued == c.spec.reqs.len() && c.out_pos == c.out.len();
            if c.spec.half_close && all_out && !c.fin_sent {
                // Shuts down its write side: the FIN follows the last request at once.
                s.close();
                c.fin_sent = true;
            }
            while s.can_recv() {
                let errors = &mut self.errors;
                let spec = &c.spec;
                let (idx, got, cur, line, served_by) =
                    (c.idx, &mut c.got, &mut c.cur, &mut c.line, &mut c.served_by);
                s.recv(|buf| {
                    for &b in buf.iter() {
                        client_byte(idx, spec, got, cur, line, served_by, b, errors);
                    }
                    (buf.len(), ())
                })
                .unwrap();
            }
            let all_in = c.got == c.spec.reqs.len();
            let server_closes = c.spec.reqs.last().is_some_and(|r| r.close);
            let eof = matches!(st, tcp::State::CloseWait) && !s.can_recv();
            if c.fin_sent {
                // Half-closed: the server's FIN ends it (TIME-WAIT, or CLOSED after it).
                if st == tcp::State::TimeWait {
                    if !all_in {
                        self.errors.push(format!(
                            "client conn {}: server closed after {} of {} responses",
                            c.idx,
                            c.got,
                            c.spec.reqs.len()
                        ));
                    }
                    c.closed = true;
                }
            } else if all_in && all_out && (!server_closes || eof) {
                if c.spec.notify_then_reset {
                    // A TLS close_notify's size; the server, closed, reads no more.
                    s.send_slice(&[0x15; 24]).unwrap();
                } else {
                    // With `close`, the server closes first (the client answers its FIN).
                    s.close();
                }
                c.closed = true;
            } else if eof {
                self.errors.push(format!(
                    "client conn {}: server closed after {} of {} responses",
                    c.idx,
                    c.got,
                    c.spec.reqs.len()
                ));
                s.close();
                c.closed = true;
            }
        }
    }

    pub(crate) fn all_done(&self) -> bool {
        self.conns.iter().all(|c| c.done)
    }
}

#[allow(clippy::too_many_arguments)]
fn client_byte(
    idx: usize,
    spec: &ConnSpec,
    got: &mut usize,
    cur: &mut Option<(u32, u64, u8, u64)>,
    line: &mut Vec<u8>,
    served_by: &mut Vec<u8>,
    b: u8,
    errors: &mut Vec<String>,
) {
    if errors.len() > 20 {
        return;
    }
    if let Some((id, size, _, pos)) = cur {
        let want = body_byte(*id, *pos);
        if b != want {
            errors.push(format!(
                "client conn {idx}: response {id} byte {pos} is {b:#x}, want {want:#x}"
            ));
        }
        *pos += 1;
        if *pos == *size {
            *cur = None;
            *got += 1;
        }
        return;
    }
    if b != b'\n' {
        line.push(b);
        if line.len() > 64 {
            errors.push(format!(
                "client conn {idx}: garbage instead of a response header: {:?}",
                String::from_utf8_lossy(line)
            ));
            line.clear();
        }
        return;
    }
    let text = String::from_utf8_lossy(line).into_owned();
    line.clear();
    let f: Vec<&str> = text.split(' ').collect();
    let parsed = (f.len() == 4 && f[0] == "R").then(|| {
        (
            f[1].parse::<u32>().ok(),
            f[2].parse::<u64>().ok(),
            f[3].parse::<u8>().ok(),
        )
    });
    let Some((Some(id), Some(size), Some(node))) = parsed else {
        errors.push(format!("client conn {idx}: bad response header {text:?}"));
        return;
    };
    let Some(r) = spec.reqs.get(*got) else {
        errors.push(format!(
            "client conn {idx}: response {id} after the last one"
        ));
        return;
    };
    let want = request_id(idx, *got);
    if id != want || size != r.size as u64 {
        errors.push(format!(
            "client conn {idx}: response {id} ({size} bytes) where {want} ({} bytes) was due",
            r.size
        ));
    }
    served_by.push(node);
    if size == 0 {
        *got += 1;
    } else {
        *cur = Some((id, size, node, 0));
    }
}
