//! Stage 6, rewrite: typed in-place edits of a frame's headers, each keeping the IPv4 and TCP
//! checksums right incrementally (RFC 1624), and the translation a spliced segment gets.
//!
//! Every offset is a name from [`field`]. A rewrite never changes a header's length: options
//! the receiver did not negotiate become NOPs, and SACK blocks are removed by shrinking the
//! option in place.

use smoltcp::wire::Ipv4Address;

use super::parse::Seg;
use crate::checksum::{self, Kind};
use crate::meter::Meter;
use crate::seq::SeqNumber;
use crate::switch::FrameMeta;
use crate::wire::field::{ethernet, ipv4, tcp};
use crate::wire::tcp_options;

/// In-place header edits with RFC 1624 checksum maintenance.
///
/// The headers are held as fixed-size arrays split off the frame once, in [`Rw::new`]: every
/// field access below is at a constant offset into an array of known length, so none of them
/// carries a bounds check, and the no_std link check (`nostd-check --features panic-free`) can
/// prove that no rewrite panics.
pub(super) struct Rw<'f, M: Meter + ?Sized> {
    /// The IPv4 header (the parser refuses options, so it is exactly 20 bytes).
    ip: &'f mut [u8; ipv4::LEN],
    /// The fixed part of the TCP header.
    th: &'f mut [u8; tcp::LEN],
    /// TCP options and payload: offset `at` from the TCP header is `rest[at - tcp::LEN]`.
    rest: &'f mut [u8],
    kind: Kind,
    /// The checksums as found, and the one's complement sum of every edit since (`~m + m'`
    /// per 16-bit word, RFC 1624 equation 3): folded once, in [`Rw::finish`]. All of them in
    /// native byte order: one's complement sums do not depend on it (RFC 1071 2(B)), so a
    /// field is read and its delta taken without swapping its bytes.
    ip_c: u16,
    tcp_c: u16,
    ip_acc: u64,
    tcp_acc: u64,
    /// Told of every edit as it is made (bytes rewritten, checksum words updated).
    meter: &'f mut M,
}

impl<'f, M: Meter + ?Sized> Rw<'f, M> {
    /// `None` when the frame is shorter than Ethernet + IPv4 + TCP headers, which the parser
    /// has already ruled out for every frame that reaches a rewrite.
    #[inline]
    pub fn new(f: &'f mut [u8], kind: Kind, meter: &'f mut M) -> Option<Self> {
        let (_, l3) = f.split_at_mut_checked(ethernet::LEN)?;
        let (ip, l4) = l3.split_first_chunk_mut::<{ ipv4::LEN }>()?;
        let (th, rest) = l4.split_first_chunk_mut::<{ tcp::LEN }>()?;
        let ip_c = ne16(ip, ipv4::CHECKSUM.start);
        let tcp_c = ne16(th, tcp::CHECKSUM.start);
        Some(Rw {
            ip,
            th,
            rest,
            kind,
            ip_c,
            tcp_c,
            ip_acc: 0,
            tcp_acc: 0,
            meter,
        })
    }
    /// The source address (IPv4 and pseudo-header checksums follow).
    #[inline]
    pub fn src(&mut self, a: Ipv4Address) {
        self.addr(ipv4::SRC.start, a.octets());
    }
    /// The destination address.
    #[inline]
    pub fn dst(&mut self, a: Ipv4Address) {
        self.addr(ipv4::DST.start, a.octets());
    }
    #[inline]
    fn addr(&mut self, at: usize, new: [u8; 4]) {
        let old = ne32(self.ip, at);
        let new = u32::from_ne_bytes(new);
        if old != new {
            put_ne32(self.ip, at, new);
            // In the pseudo-header too, so a partial checksum changes as well.
            let d = delta32(old, new);
            self.ip_acc += d;
            self.tcp_acc += d;
            self.meter.bytes_rewritten(4);
            self.meter.checksum_words(4);
        }
    }
    /// A 16-bit field of the fixed TCP header at byte offset `at`.
    #[inline]
    fn tcp16(&mut self, at: usize, v: u16) {
        let (old, v) = (ne16(self.th, at), u16::from_ne_bytes(v.to_be_bytes()));
        if old != v {
            put_ne16(self.th, at, v);
            self.segment_edit(delta16(old, v));
            self.meter.bytes_rewritten(2);
            self.meter.checksum_words(1);
        }
    }
    /// A 32-bit field of the fixed TCP header at byte offset `at`.
    #[inline]
    fn tcp32(&mut self, at: usize, v: u32) {
        let (old, v) = (ne32(self.th, at), u32::from_ne_bytes(v.to_be_bytes()));
        if old != v {
            put_ne32(self.th, at, v);
            self.segment_edit(delta32(old, v));
            self.meter.bytes_rewritten(4);
            self.meter.checksum_words(2);
        }
    }
    /// An edit inside the segment: a partial checksum does not cover the segment yet.
    #[inline]
    fn segment_edit(&mut self, d: u64) {
        if self.kind == Kind::Full {
            self.tcp_acc += d;
        }
    }
    /// The source port.
    #[inline]
    pub fn sport(&mut self, p: u16) {
        self.tcp16(tcp::SRC_PORT.start, p);
    }
    /// The destination port.
    #[inline]
    pub fn dport(&mut self, p: u16) {
        self.tcp16(tcp::DST_PORT.start, p);
    }
    /// The sequence number.
    #[inline]
    pub fn seq(&mut self, v: SeqNumber) {
        self.tcp32(tcp::SEQ.start, v.0);
    }
    /// The acknowledgment number.
    #[inline]
    pub fn ack(&mut self, v: SeqNumber) {
        self.tcp32(tcp::ACK.start, v.0);
    }
    /// The window field.
    #[inline]
    pub fn win(&mut self, w: u16) {
        self.tcp16(tcp::WINDOW.start, w);
    }
    /// Clears FIN in the flags word (data offset, reserved bits and flags).
    pub fn clear_fin(&mut self) {
        let old = ne16(self.th, tcp::FLAGS.start);
        // FIN is in the second byte of the word, in either byte order's terms.
        let new = old & !u16::from_ne_bytes([0, tcp::FIN]);
        if old != new {
            put_ne16(self.th, tcp::FLAGS.start, new);
            self.segment_edit(delta16(old, new));
        }
    }
    /// A 32-bit option field at offset `at` from the TCP header (options start at 20, an even
    /// offset, so the checksum parity of `at` is the same in `rest`).
    pub fn opt32(&mut self, at: usize, v: u32) {
        let Some(at) = at.checked_sub(tcp::LEN) else {
            return;
        };
        let Some(f) = self.rest.get_mut(at..at + 4) else {
            return;
        };
        let old = u32::from_ne_bytes([f[0], f[1], f[2], f[3]]);
        let v = u32::from_ne_bytes(v.to_be_bytes());
        if old == v {
            return;
        }
        f.copy_from_slice(&v.to_ne_bytes());
        // At an odd offset the value straddles 16-bit words: its bytes count rotated by 8 (in
        // either byte order, the first byte moves to the other half of its word).
        let d = if at.is_multiple_of(2) {
            delta32(old, v)
        } else {
            delta32(old.rotate_left(8), v.rotate_left(8))
        };
        self.segment_edit(d);
        self.meter.bytes_rewritten(4);
        self.meter.checksum_words(3);
    }
    /// One option byte at offset `at` from the TCP header (an option kind or length).
    pub fn opt8(&mut self, at: usize, v: u8) {
        let Some(b) = at.checked_sub(tcp::LEN).and_then(|i| self.rest.get_mut(i)) else {
            return;
        };
        let old = *b;
        if old != v {
            *b = v;
            // A byte at an even offset is the first of its 16-bit word.
            let word = |x: u8| {
                if at.is_multiple_of(2) {
                    u16::from_ne_bytes([x, 0])
                } else {
                    u16::from_ne_bytes([0, x])
                }
            };
            self.segment_edit(delta16(word(old), word(v)));
            self.meter.bytes_rewritten(1);
            self.meter.checksum_words(1);
        }
    }
    /// The 32-bit option field at offset `at` from the TCP header (0 if out of range).
    pub fn opt32_get(&self, at: usize) -> u32 {
        at.checked_sub(tcp::LEN)
            .map_or(0, |at| tcp_options::read_u32(self.rest, at))
    }
    /// Decrements the TTL (it shares its 16-bit checksum word with the protocol byte).
    #[inline]
    pub fn ttl_dec(&mut self) {
        let ttl = self.ip[ipv4::TTL];
        self.ip[ipv4::TTL] = ttl.wrapping_sub(1);
        // The TTL is the first byte of its word, so `~m + m'` is 0xFFFF less the TTL's unit
        // whatever the word was (RFC 1624 section 3's TTL case); only a TTL of 0 wraps (the
        // parser drops TTL 0 and 1 before a rewrite, but a rewrite stays right for any input).
        self.ip_acc += if ttl != 0 {
            u16::from_ne_bytes([0xfe, 0xff]) as u64
        } else {
            let proto = self.ip[ipv4::PROTOCOL];
            delta16(
                u16::from_ne_bytes([0, proto]),
                u16::from_ne_bytes([0xff, proto]),
            )
        };
        self.meter.bytes_rewritten(1);
        self.meter.checksum_words(1);
    }
    /// Writes both checksums back and tells the meter what the rewrite touched.
    #[inline]
    pub fn finish(self) {
        let ip_c = !checksum::fold64(!self.ip_c as u64 + self.ip_acc);
        let tcp_c = match self.kind {
            Kind::Full => !checksum::fold64(!self.tcp_c as u64 + self.tcp_acc),
            Kind::Partial => checksum::fold64(self.tcp_c as u64 + self.tcp_acc),
        };
        put_ne16(self.ip, ipv4::CHECKSUM.start, ip_c);
        put_ne16(self.th, tcp::CHECKSUM.start, tcp_c);
        // The two checksum fields themselves.
        self.meter.bytes_rewritten(4);
    }
}

/// `~m + m'` for a 16-bit word changing from `old` to `new` (RFC 1624 equation 3).
#[inline]
const fn delta16(old: u16, new: u16) -> u64 {
    !old as u64 + new as u64
}

/// [`delta16`] for both halves of a 32-bit value, as one 32-bit sum: modulo 2^16 - 1 a 32-bit
/// value is the sum of its halves (2^16 = 1), and `!old` (2^32 - 1 - old) is `-old` as the two
/// halves' complements are, since 2^32 - 1 = 65537 x 65535. The sum is zero exactly when the
/// two-halves form is (old all ones, new zero), so the folded checksums are bit for bit the
/// same.
#[inline]
const fn delta32(old: u32, new: u32) -> u64 {
    !old as u64 + new as u64
}

/// A 16-bit field in native byte order (for checksum arithmetic only).
#[inline]
fn ne16<const N: usize>(h: &[u8; N], at: usize) -> u16 {
    match h.get(at..at + 2) {
        Some(&[a, b]) => u16::from_ne_bytes([a, b]),
        _ => 0,
    }
}

/// A 32-bit field in native byte order (for checksum arithmetic only).
#[inline]
fn ne32<const N: usize>(h: &[u8; N], at: usize) -> u32 {
    match h.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_ne_bytes([a, b, c, d]),
        _ => 0,
    }
}

#[inline]
fn put_ne16<const N: usize>(h: &mut [u8; N], at: usize, v: u16) {
    if let Some(f) = h.get_mut(at..at + 2) {
        f.copy_from_slice(&v.to_ne_bytes());
    }
}

#[inline]
fn put_ne32<const N: usize>(h: &mut [u8; N], at: usize, v: u32) {
    if let Some(f) = h.get_mut(at..at + 4) {
        f.copy_from_slice(&v.to_ne_bytes());
    }
}

/// How one spliced segment is rewritten.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Xlate {
    pub src: Option<([u8; 4], u16)>,
    pub dst: Option<([u8; 4], u16)>,
    pub seq: Option<SeqNumber>,
    pub ack: Option<SeqNumber>,
    pub win: Option<u16>,
    pub ts: Option<(u32, u32)>,
    /// Subtracted from every SACK edge.
    pub sack_off: u32,
    /// SACK blocks are kept only when they lie within `[lo, hi)` of the sender's space (either
    /// bound may be open): the others report data another binding's server sent, which the
    /// receiver never did. They are removed from the option (see `rewrite`).
    pub sack_keep: Option<(Option<SeqNumber>, Option<SeqNumber>)>,
    /// The receiver did not negotiate timestamps: the option becomes NOPs.
    pub strip_ts: bool,
    /// The receiver did not negotiate SACK: the option becomes NOPs.
    pub strip_sack: bool,
    pub clear_fin: bool,
}

/// Four NOP option bytes.
const NOPS: u32 = 0x0101_0101;

/// Applies a translation to a TCP frame in place, keeping both checksums right incrementally.
/// Translates the SACK blocks of `seg` by `x.sack_off`, removing those outside `x.sack_keep`:
/// the kept blocks move to the front in their order (a D-SACK stays first), the freed 8-byte
/// slots become NOPs and the option's length shrinks; with no block left the whole option
/// becomes NOPs. The header length never changes, so this works in place.
fn rewrite_sack<M: Meter + ?Sized>(rw: &mut Rw<'_, M>, seg: &Seg, x: &Xlate) {
    let (at0, n) = (seg.opts.sack_at as usize, seg.opts.sack_blocks as usize);
    let keep = |l: SeqNumber, r: SeqNumber| match x.sack_keep {
        _ if x.strip_sack => false,
        None => true,
        Some((lo, hi)) => lo.is_none_or(|lo| l.ge(lo)) && hi.is_none_or(|hi| r.le(hi)),
    };
    let mut kept = 0;
    for i in 0..n {
        let at = at0 + 8 * i;
        let (l, r) = (SeqNumber(rw.opt32_get(at)), SeqNumber(rw.opt32_get(at + 4)));
        if !keep(l, r) {
            continue;
        }
        let to = at0 + 8 * kept;
        rw.opt32(to, l.sub(x.sack_off).0);
        rw.opt32(to + 4, r.sub(x.sack_off).0);
        kept += 1;
    }
    if kept == n {
        return;
    }
    for i in kept..n {
        rw.opt32(at0 + 8 * i, NOPS);
        rw.opt32(at0 + 8 * i + 4, NOPS);
    }
    match kept {
        // Kind and length too: ten NOPs where the option was.
        0 => {
            rw.opt8(at0.wrapping_sub(2), 1);
            rw.opt8(at0.wrapping_sub(1), 1);
        }
        _ => rw.opt8(at0.wrapping_sub(1), (2 + 8 * kept) as u8),
    }
}

/// Applies `x` to the frame in place. False only if the frame is shorter than its headers,
/// which the parser has ruled out (the caller then drops it as `internal`).
#[must_use]
pub(super) fn rewrite<M: Meter + ?Sized>(
    frame: &mut [u8],
    meta: FrameMeta,
    seg: &Seg,
    x: &Xlate,
    meter: &mut M,
) -> bool {
    let Some(mut rw) = Rw::new(frame, meta.csum, meter) else {
        return false;
    };
    if let Some((a, p)) = x.src {
        rw.src(Ipv4Address::from_octets(a));
        rw.sport(p);
    }
    if let Some((a, p)) = x.dst {
        rw.dst(Ipv4Address::from_octets(a));
        rw.dport(p);
    }
    if let Some(v) = x.seq {
        rw.seq(v);
    }
    if let Some(v) = x.ack {
        rw.ack(v);
    }
    if let Some(w) = x.win {
        rw.win(w);
    }
    if let (Some((tsval, tsecr)), Some(at)) = (x.ts, seg.opts.ts_at) {
        rw.opt32(at as usize, tsval);
        rw.opt32(at as usize + 4, tsecr);
    }
    if let (true, Some(at)) = (x.strip_ts, seg.opts.ts_at) {
        // Kind, length and both values: ten NOPs where the option was.
        let at = at as usize;
        rw.opt8(at.wrapping_sub(2), 1);
        rw.opt8(at.wrapping_sub(1), 1);
        rw.opt32(at, NOPS);
        rw.opt32(at + 4, NOPS);
    }
    if x.sack_off != 0 || x.sack_keep.is_some() || x.strip_sack {
        rewrite_sack(&mut rw, seg, x);
    }
    if x.clear_fin {
        rw.clear_fin();
    }
    rw.ttl_dec();
    rw.finish();
    true
}

/// The segment as it looks after `x` (for tracking on the egress leg).
pub(super) fn translated(seg: &Seg, x: &Xlate) -> Seg {
    let mut t = *seg;
    if let Some(v) = x.seq {
        t.seq = v;
    }
    if let Some(v) = x.ack {
        t.ack = v;
    }
    if let Some(w) = x.win {
        t.win = w;
    }
    if let Some((v, e)) = x.ts {
        t.opts.tsval = v;
        t.opts.tsecr = e;
    }
    if x.strip_ts {
        t.opts.ts_at = None;
    }
    if x.strip_sack {
        t.opts.sack_blocks = 0;
    }
    t
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::meter::NoMeter;
    use proptest::prelude::*;

    /// An Ethernet/IPv4/TCP frame with 20 bytes of options and `payload`, both checksums right.
    fn frame(bytes: &[u8; 40], payload: &[u8]) -> std::vec::Vec<u8> {
        let mut f = std::vec![0u8; ethernet::LEN];
        let ip_start = f.len();
        f.extend_from_slice(bytes);
        f.extend_from_slice(&[0u8; 20]);
        f.extend_from_slice(payload);
        let total = (f.len() - ip_start) as u16;
        let ip = &mut f[ip_start..ip_start + 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[8] = ip[8].max(2);
        ip[9] = 6;
        ip[10..12].fill(0);
        let c = checksum::checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let th = ip_start + 20;
        // Data offset 10 words: 20 bytes of options.
        f[th + 12] = 0xa0;
        f[th + 16..th + 18].fill(0);
        let ip = &f[ip_start..ip_start + 20];
        let (src, dst) = (
            [ip[12], ip[13], ip[14], ip[15]],
            [ip[16], ip[17], ip[18], ip[19]],
        );
        let pseudo = checksum::pseudo_header_sum(src, dst, 6, (f.len() - th) as u16);
        let c = !checksum::fold(checksum::sum(&f[th..], pseudo));
        f[th + 16..th + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn checksums_ok(f: &[u8]) -> bool {
        let ip = &f[ethernet::LEN..ethernet::LEN + 20];
        let (src, dst) = (
            [ip[12], ip[13], ip[14], ip[15]],
            [ip[16], ip[17], ip[18], ip[19]],
        );
        checksum::ipv4_header_ok(ip)
            && checksum::transport_ok(src, dst, 6, &f[ethernet::LEN + 20..])
    }

    /// The edges of one's complement zero: both forms agree there too.
    #[test]
    fn delta32_edges() {
        for hc in [0u16, 1, 0xfffe, 0xffff] {
            for (old, new) in [
                (u32::MAX, 0),
                (0, u32::MAX),
                (0, 0),
                (u32::MAX, u32::MAX),
                (0xffff, 0),
            ] {
                let halves = delta16((old >> 16) as u16, (new >> 16) as u16)
                    + delta16(old as u16, new as u16);
                assert_eq!(
                    !checksum::fold64(!hc as u64 + delta32(old, new)),
                    !checksum::fold64(!hc as u64 + halves),
                    "hc {hc:#x} old {old:#x} new {new:#x}"
                );
            }
        }
    }

    proptest! {
        /// The one-sum `delta32` folds, with any checksum, to exactly what the two-halves form
        /// of RFC 1624 equation 3 gives.
        #[test]
        fn delta32_folds_like_two_halves(hc in any::<u16>(), old in any::<u32>(), new in any::<u32>()) {
            let halves = delta16((old >> 16) as u16, (new >> 16) as u16) + delta16(old as u16, new as u16);
            prop_assert_eq!(
                !checksum::fold64(!hc as u64 + delta32(old, new)),
                !checksum::fold64(!hc as u64 + halves)
            );
        }

        /// Every edit of the rewriter, at even and odd offsets, leaves both checksums equal to
        /// a full recomputation (the edits are summed in native byte order).
        #[test]
        fn edits_keep_checksums(hdr in any::<[u8; 40]>(),
                                payload in proptest::collection::vec(any::<u8>(), 0..40),
                                addr in any::<[u8; 4]>(), port in any::<u16>(), v in any::<u32>(),
                                w in any::<u16>(), at32 in 20usize..36, at8 in 20usize..40,
                                b in any::<u8>(), which in 0u8..8) {
            let mut f = frame(&hdr, &payload);
            prop_assert!(checksums_ok(&f));
            let mut m = NoMeter;
            let mut rw = Rw::new(&mut f, Kind::Full, &mut m).unwrap();
            match which {
                0 => { rw.src(Ipv4Address::from_octets(addr)); rw.sport(port); }
                1 => { rw.dst(Ipv4Address::from_octets(addr)); rw.dport(port); }
                2 => { rw.seq(SeqNumber(v)); rw.ack(SeqNumber(v ^ 0x5a5a)); }
                3 => rw.win(w),
                4 => rw.opt32(at32, v),
                5 => rw.opt8(at8, b),
                6 => rw.clear_fin(),
                _ => {
                    rw.src(Ipv4Address::from_octets(addr));
                    rw.opt32(at32, v);
                    rw.opt8(at8, b);
                    rw.ttl_dec();
                }
            }
            rw.finish();
            prop_assert!(checksums_ok(&f));
        }
    }
}
