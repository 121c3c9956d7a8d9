//! Raw frames for the hostile-input tests: an AF_PACKET socket inside a namespace, a builder of
//! Ethernet / IPv4 / TCP / UDP frames with their own (independent) checksum code, and a sniffer
//! that reads a live connection's sequence numbers off the wire.

#![allow(dead_code)]

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Runs `f` on a thread that has entered namespace `ns`; sockets `f` creates live there (and keep
/// living there when handed back to another thread).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            knits_host::netns::enter(ns).unwrap_or_else(|e| panic!("enter {ns}: {e}"));
            f()
        })
        .join()
        .expect("namespace thread panicked")
    })
}

/// The MAC address of link `ifname` in namespace `ns` (from `ip -o link show`).
pub fn link_mac(ns: &str, ifname: &str) -> [u8; 6] {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-o", "link", "show", "dev", ifname])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no link/ether for {ifname} in {ns}: {text}"));
    let mut m = [0u8; 6];
    for (i, p) in mac.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("mac digit");
    }
    m
}

/// An AF_PACKET raw socket bound to one interface (all EtherTypes).
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

const ETH_P_ALL: u16 = 0x0003;

impl PacketSocket {
    /// Opens a socket on `ifname` inside namespace `ns`.
    pub fn open(ns: &str, ifname: &str) -> io::Result<PacketSocket> {
        let ifname = ifname.to_string();
        in_netns(ns, move || {
            let cname = std::ffi::CString::new(ifname.clone()).expect("ifname");
            // SAFETY: plain libc calls with valid arguments; the fd is owned right away.
            unsafe {
                let idx = libc::if_nametoindex(cname.as_ptr());
                if idx == 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    (ETH_P_ALL.to_be()) as i32,
                );
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                sll.sll_family = libc::AF_PACKET as u16;
                sll.sll_protocol = ETH_P_ALL.to_be();
                sll.sll_ifindex = idx as i32;
                let r = libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(PacketSocket {
                    fd,
                    ifindex: idx as i32,
                })
            }
        })
    }

    /// Sends one Ethernet frame as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; the frame buffer is valid for its length.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(frame.get(..6).unwrap_or(&[0xff; 6]));
            let r = libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Receives one frame; returns its length and whether this host sent it (PACKET_OUTGOING),
    /// or `None` after `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<(usize, bool)>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(60_000) as i32) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(None);
        }
        // SAFETY: buffers valid for their lengths.
        unsafe {
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
                &mut sll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                &mut len,
            );
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(None);
                }
                return Err(e);
            }
            Ok(Some((n as usize, sll.sll_pkttype == libc::PACKET_OUTGOING)))
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Checksums (RFC 1071), written out here so the tests do not share code with the switch.

/// One's complement sum of big-endian 16-bit words.
pub fn ones_sum(data: &[u8], mut acc: u32) -> u32 {
    let mut it = data.chunks_exact(2);
    for w in &mut it {
        acc += u16::from_be_bytes([w[0], w[1]]) as u32;
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [b] = it.remainder() {
        acc += (*b as u32) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn csum(data: &[u8], init: u32) -> u16 {
    !(ones_sum(data, init) as u16)
}

fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&src);
    p[4..8].copy_from_slice(&dst);
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    ones_sum(&p, 0)
}

// ------------------------------------------------------------------------------------------------
// Frames.

/// TCP flag bits.
pub mod flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

/// Offsets in an Ethernet/IPv4 frame without IP options.
pub const ETH: usize = 14;
pub const IP: usize = 14;
pub const L4: usize = 34;

/// A TCP segment to build.
#[derive(Debug, Clone)]
pub struct Tcp {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub win: u16,
    /// Raw option bytes (padded to 4 bytes by the builder with EOL).
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Tcp {
    /// An ACK-only segment.
    pub fn new(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Tcp {
        Tcp {
            src,
            dst,
            sport,
            dport,
            seq: 1,
            ack: 1,
            flags: flag::ACK,
            win: 502,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }
}

/// Frame addresses.
#[derive(Debug, Clone, Copy)]
pub struct Macs {
    pub dst: [u8; 6],
    pub src: [u8; 6],
}

/// Ethernet header + `ip` payload with EtherType 0x0800.
pub fn ether(m: Macs, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH + payload.len());
    f.extend_from_slice(&m.dst);
    f.extend_from_slice(&m.src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet (20-byte header, DF, TTL 64) around `l4`, checksums right.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x4b4eu16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = csum(&p, 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

/// The TCP segment bytes (header, options, payload) with its checksum.
pub fn tcp_segment(t: &Tcp) -> Vec<u8> {
    let mut opts = t.options.clone();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let hl = 20 + opts.len();
    let mut s = vec![0u8; hl];
    s[0..2].copy_from_slice(&t.sport.to_be_bytes());
    s[2..4].copy_from_slice(&t.dport.to_be_bytes());
    s[4..8].copy_from_slice(&t.seq.to_be_bytes());
    s[8..12].copy_from_slice(&t.ack.to_be_bytes());
    s[12] = ((hl / 4) as u8) << 4;
    s[13] = t.flags;
    s[14..16].copy_from_slice(&t.win.to_be_bytes());
    s[20..].copy_from_slice(&opts);
    s.extend_from_slice(&t.payload);
    let c = csum(&s, pseudo(t.src.octets(), t.dst.octets(), 6, s.len()));
    s[16..18].copy_from_slice(&c.to_be_bytes());
    s
}

/// A whole Ethernet/IPv4/TCP frame.
pub fn tcp_frame(m: Macs, t: &Tcp) -> Vec<u8> {
    ether(m, 0x0800, &ipv4(t.src, t.dst, 6, &tcp_segment(t)))
}

/// A whole Ethernet/IPv4/UDP frame (checksum filled in).
pub fn udp_frame(
    m: Macs,
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    let c = csum(&u, pseudo(src.octets(), dst.octets(), 17, u.len()));
    u[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    ether(m, 0x0800, &ipv4(src, dst, 17, &u))
}

/// Recomputes the IPv4 header checksum of `f` (header length from its IHL, at most the frame).
pub fn fix_ip_checksum(f: &mut [u8]) {
    let ihl = ((f[IP] & 15) as usize * 4).clamp(20, f.len() - IP);
    f[IP + 10] = 0;
    f[IP + 11] = 0;
    let c = csum(&f[IP..IP + ihl], 0);
    f[IP + 10..IP + 12].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the TCP or UDP checksum of `f` over the segment its IPv4 header describes.
pub fn fix_l4_checksum(f: &mut [u8]) {
    let ihl = (f[IP] & 15) as usize * 4;
    let total = u16::from_be_bytes([f[IP + 2], f[IP + 3]]) as usize;
    let end = (IP + total).min(f.len());
    let at = IP + ihl;
    let proto = f[IP + 9];
    let off = if proto == 6 { 16 } else { 6 };
    if at + off + 2 > end {
        return;
    }
    let src: [u8; 4] = f[IP + 12..IP + 16].try_into().unwrap();
    let dst: [u8; 4] = f[IP + 16..IP + 20].try_into().unwrap();
    f[at + off] = 0;
    f[at + off + 1] = 0;
    let c = csum(&f[at..end], pseudo(src, dst, proto, end - at));
    f[at + off..at + off + 2].copy_from_slice(&c.to_be_bytes());
}

/// A frame's TCP fields, when it is Ethernet/IPv4/TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpView {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub win: u16,
    pub len: u32,
}

/// Parses an Ethernet/IPv4/TCP frame (no checks beyond lengths).
pub fn parse_tcp(f: &[u8]) -> Option<TcpView> {
    if f.len() < L4 + 20 || f[12..14] != [0x08, 0x00] || f[IP + 9] != 6 {
        return None;
    }
    let ihl = (f[IP] & 15) as usize * 4;
    let total = u16::from_be_bytes([f[IP + 2], f[IP + 3]]) as usize;
    let t = f.get(IP + ihl..)?;
    if t.len() < 20 {
        return None;
    }
    let hl = (t[12] >> 4) as usize * 4;
    let be16 = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let ip4 = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    Some(TcpView {
        src: ip4(&f[IP + 12..]),
        dst: ip4(&f[IP + 16..]),
        sport: be16(&t[0..]),
        dport: be16(&t[2..]),
        seq: be32(&t[4..]),
        ack: be32(&t[8..]),
        flags: t[13],
        win: be16(&t[14..]),
        len: total.saturating_sub(ihl + hl) as u32,
    })
}

/// What the sniffer saw of one connection, in the client's own numbers.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    /// The client's next sequence number (seq + len of its latest segment).
    pub client_nxt: u32,
    /// The last acknowledgment the client sent (the server's next sequence number as the client
    /// has received it).
    pub client_ack: u32,
    /// The highest acknowledgment the server sent the client.
    pub server_ack: Option<u32>,
}

/// Watches interface `ifname` in `ns` for UDP datagrams to `dport` sent by this host; returns
/// the first payload.
pub fn sniff_udp_to(
    ns: &str,
    ifname: &str,
    dport: u16,
    limit: Duration,
) -> Result<Vec<u8>, String> {
    let sock = PacketSocket::open(ns, ifname).map_err(|e| format!("packet socket: {e}"))?;
    sniff_udp_on(&sock, dport, limit)
}

/// As [`sniff_udp_to`] on an open socket (open it before the datagram can be sent).
pub fn sniff_udp_on(sock: &PacketSocket, dport: u16, limit: Duration) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; 70_000];
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let Some((n, out)) = sock
            .recv(&mut buf, Duration::from_millis(50))
            .map_err(|e| format!("sniff: {e}"))?
        else {
            continue;
        };
        let f = &buf[..n];
        if !out || f.len() < L4 + 8 || f[12..14] != [0x08, 0x00] || f[IP + 9] != 17 {
            continue;
        }
        let ihl = (f[IP] & 15) as usize * 4;
        let u = &f[IP + ihl..];
        if u.len() >= 8 && u16::from_be_bytes([u[2], u[3]]) == dport {
            let len = u16::from_be_bytes([u[4], u[5]]) as usize;
            return Ok(u[8..len.min(u.len())].to_vec());
        }
    }
    Err(format!("no UDP datagram to port {dport} within {limit:?}"))
}

/// Watches every TCP connection of `client` on an interface from a thread of its own, keeping
/// the latest [`Seen`] per client port, until dropped.
pub struct FlowWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    flows: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u16, Seen>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FlowWatch {
    /// Starts watching `ifname` in `ns`.
    pub fn start(ns: &str, ifname: &str, client: Ipv4Addr) -> io::Result<FlowWatch> {
        use std::sync::atomic::Ordering;
        let sock = PacketSocket::open(ns, ifname)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flows = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
            u16,
            Seen,
        >::new()));
        let (st, fl) = (stop.clone(), flows.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !st.load(Ordering::Relaxed) {
                let Ok(Some((n, _))) = sock.recv(&mut buf, Duration::from_millis(50)) else {
                    continue;
                };
                let Some(t) = parse_tcp(&buf[..n]) else {
                    continue;
                };
                let mut map = fl.lock().unwrap();
                if t.src == client {
                    let nxt = t
                        .seq
                        .wrapping_add(t.len)
                        .wrapping_add((t.flags & (flag::SYN | flag::FIN) != 0) as u32);
                    let s = map.entry(t.sport).or_insert(Seen {
                        client_nxt: nxt,
                        client_ack: t.ack,
                        server_ack: None,
                    });
                    if (nxt.wrapping_sub(s.client_nxt) as i32) > 0 {
                        s.client_nxt = nxt;
                    }
                    if t.flags & flag::ACK != 0 {
                        s.client_ack = t.ack;
                    }
                } else if t.dst == client
                    && let Some(s) = map.get_mut(&t.dport)
                    && t.flags & flag::ACK != 0
                    && s.server_ack
                        .is_none_or(|a| (t.ack.wrapping_sub(a) as i32) > 0)
                {
                    s.server_ack = Some(t.ack);
                }
            }
        });
        Ok(FlowWatch {
            stop,
            flows,
            thread: Some(thread),
        })
    }

    /// The connection of client port `cport` once the server has acknowledged everything the
    /// client sent (so `client_nxt` is exactly the sequence number the server expects next).
    pub fn settled(&self, cport: u16, limit: Duration) -> Result<Seen, String> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.flows.lock().unwrap().get(&cport).copied();
            if let Some(s) = s
                && s.server_ack == Some(s.client_nxt)
            {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "port {cport}: no settled state within {limit:?} (saw {s:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FlowWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Counts the ARP requests for `target` that arrive on an interface (from the switch), from a
/// thread of its own, until dropped.
pub struct ArpWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ArpWatch {
    /// Starts counting on `ifname` in `ns`.
    pub fn start(ns: &str, ifname: &str, target: Ipv4Addr) -> io::Result<ArpWatch> {
        use std::sync::atomic::Ordering;
        let sock = PacketSocket::open(ns, ifname)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (st, ct) = (stop.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !st.load(Ordering::Relaxed) {
                let Ok(Some((n, out))) = sock.recv(&mut buf, Duration::from_millis(50)) else {
                    continue;
                };
                let f = &buf[..n];
                if !out
                    && f.len() >= 42
                    && f[12..14] == [0x08, 0x06]
                    && f[20..22] == [0, 1]
                    && f[38..42] == target.octets()
                {
                    ct.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(ArpWatch {
            stop,
            count,
            thread: Some(thread),
        })
    }

    /// ARP requests counted so far.
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for ArpWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
