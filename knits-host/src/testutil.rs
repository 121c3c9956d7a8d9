//! Frames for unit tests: Ethernet / IPv4 / TCP or UDP with correct checksums.

use knits_core::checksum;

use crate::vnet::{F_NEEDS_CSUM, VnetHdr};

/// An Ethernet/IPv4/TCP frame 198.18.0.2:40000 -> 198.18.0.10:80 carrying `payload`, with a full
/// TCP checksum and a correct IPv4 header checksum. `tcp` false makes it UDP instead.
pub fn tcp_frame(payload: &[u8], tcp: bool) -> Vec<u8> {
    let l4 = if tcp { 20 } else { 8 };
    let ip_len = 20 + l4 + payload.len();
    let mut f = vec![0u8; 14 + ip_len];
    f[0..6].copy_from_slice(&[0x02, 0x4b, 0x4e, 0, 0, 0]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40;
    ip[8] = 64;
    ip[9] = if tcp { 6 } else { 17 };
    ip[12..16].copy_from_slice(&[198, 18, 0, 2]);
    ip[16..20].copy_from_slice(&[198, 18, 0, 10]);
    let c = checksum::checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let seg = &mut f[34..];
    seg[0..2].copy_from_slice(&40000u16.to_be_bytes());
    seg[2..4].copy_from_slice(&80u16.to_be_bytes());
    if tcp {
        seg[4..8].copy_from_slice(&1000u32.to_be_bytes());
        seg[8..12].copy_from_slice(&2000u32.to_be_bytes());
        seg[12] = 5 << 4;
        seg[13] = 0x18;
        seg[14..16].copy_from_slice(&65535u16.to_be_bytes());
        seg[20..].copy_from_slice(payload);
    } else {
        seg[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        seg[8..].copy_from_slice(payload);
    }
    let ph = checksum::pseudo_header_sum(
        [198, 18, 0, 2],
        [198, 18, 0, 10],
        if tcp { 6 } else { 17 },
        (l4 + payload.len()) as u16,
    );
    let c = !checksum::fold(checksum::sum(seg, ph));
    let at = if tcp { 16 } else { 6 };
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

/// Turns a frame from [`tcp_frame`] into what a TAP with checksum offload delivers: the checksum
/// field holds the uncomplemented pseudo-header sum. Returns the matching header.
pub fn partial_hdr(frame: &mut [u8]) -> VnetHdr {
    let tcp = frame[23] == 6;
    let l4_len = (frame.len() - 34) as u16;
    let ph = checksum::fold(checksum::pseudo_header_sum(
        [198, 18, 0, 2],
        [198, 18, 0, 10],
        frame[23],
        l4_len,
    ));
    let at = 34 + if tcp { 16 } else { 6 };
    frame[at..at + 2].copy_from_slice(&ph.to_be_bytes());
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: 0,
        hdr_len: 54,
        gso_size: 0,
        csum_start: 34,
        csum_offset: if tcp { 16 } else { 6 },
    }
}

/// True when the IPv4 header checksum and the TCP/UDP checksum of `frame` verify.
pub fn checksums_ok(frame: &[u8]) -> bool {
    if frame.len() < 34 {
        return false;
    }
    let ip = &frame[14..34];
    if checksum::fold(checksum::sum(ip, 0)) != 0xffff {
        return false;
    }
    let seg = &frame[34..];
    let ph = checksum::pseudo_header_sum(
        ip[12..16].try_into().unwrap(),
        ip[16..20].try_into().unwrap(),
        ip[9],
        seg.len() as u16,
    );
    checksum::fold(checksum::sum(seg, ph)) == 0xffff
}
