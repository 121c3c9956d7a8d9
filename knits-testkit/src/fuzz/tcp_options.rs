//! The TCP options target: the option walker and rewriter against a reference walk and a full
//! checksum.

use std::vec::Vec;

use knits_core::checksum::{self, Kind};
use knits_core::wire::tcp_options::{self, OptionError, TcpOptions};

use super::frame::ones_eq;
use super::reader::Reader;

/// An independent, plain reading of RFC 9293 3.1 option rules: the reference for the walker.
fn reference_walk(h: &[u8]) -> Result<TcpOptions, OptionError> {
    let mut o = TcpOptions::default();
    let end = h.len().min(60);
    let mut i = 20;
    loop {
        if i >= end {
            break;
        }
        let k = h[i];
        if k == 0 {
            break;
        }
        if k == 1 {
            i += 1;
            continue;
        }
        if i + 1 >= end {
            return Err(OptionError::Overrun);
        }
        let len = h[i + 1] as usize;
        if len < 2 {
            return Err(OptionError::BadLength);
        }
        if i + len > end {
            return Err(OptionError::Overrun);
        }
        let body = &h[i + 2..i + len];
        let fixed = match k {
            2 => Some(4),
            3 => Some(3),
            4 => Some(2),
            8 => Some(10),
            _ => None,
        };
        if fixed.is_some_and(|f| f != len) {
            return Err(OptionError::WrongFixedLength);
        }
        match k {
            2 => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
            3 => o.wscale = Some(body[0]),
            4 => o.sack_perm = true,
            5 => {
                if len < 10 || !(len - 2).is_multiple_of(8) {
                    return Err(OptionError::WrongFixedLength);
                }
                o.sack_at = (i + 2) as u8;
                o.sack_blocks = ((len - 2) / 8) as u8;
            }
            8 => {
                o.ts_at = Some((i + 2) as u8);
                o.tsval = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                o.tsecr = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
            }
            _ => {}
        }
        i += len;
    }
    o.walked = (i.min(end) - 20.min(i)) as u8;
    Ok(o)
}

fn tcp_full_checksum(seg: &[u8]) -> u16 {
    let ph = checksum::pseudo_header_sum([198, 18, 0, 2], [198, 18, 0, 10], 6, seg.len() as u16);
    let mut s = seg.to_vec();
    s[16] = 0;
    s[17] = 0;
    !checksum::fold(checksum::sum(&s, ph))
}

/// TCP options target. Byte 0: options length (mod 41). Then the options bytes, then payload
/// length (byte) and new 32-bit values for every rewritable field.
pub fn check_tcp_options(data: &[u8]) {
    let mut r = Reader::new(data);
    let olen = (r.u8() % 41) as usize;
    let opts = r.bytes(olen).to_vec();
    let plen = r.u8() as usize % 64;
    let mut seg = vec![0u8; 20];
    seg[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
    seg.extend_from_slice(&opts);
    let hlen = seg.len();
    seg[12] = (hlen.div_ceil(4) as u8) << 4;
    seg.extend((0..plen).map(|i| i as u8 ^ 0xa5));
    let header = &seg[..hlen];
    let got = tcp_options::parse(header);
    assert_eq!(
        got,
        reference_walk(header),
        "walker and reference disagree on {opts:02x?}"
    );
    // Bytes past the header never matter.
    assert_eq!(got, tcp_options::parse(&seg[..hlen]));
    let Ok(o) = got else { return };
    assert!(o.walked as usize <= 40 && o.walked as usize <= hlen - 20);
    if let Some(a) = o.ts_at {
        assert!(a as usize + 8 <= hlen);
        assert_eq!(tcp_options::read_u32(header, a as usize), o.tsval);
        assert_eq!(tcp_options::read_u32(header, a as usize + 4), o.tsecr);
    }
    assert!(o.sack_blocks as usize <= tcp_options::MAX_SACK_BLOCKS);
    assert!(o.sack_at as usize + 8 * o.sack_blocks as usize <= hlen);
    for n in 0..o.sack_blocks as usize {
        let at = o.sack_at as usize + 8 * n;
        assert_eq!(
            o.sack_block(header, n),
            Some((
                tcp_options::read_u32(header, at),
                tcp_options::read_u32(header, at + 4)
            ))
        );
    }
    assert_eq!(o.sack_block(header, o.sack_blocks as usize), None);
    // Rewrite every field; a full checksum follows, a partial one stays.
    let mut fields = Vec::new();
    if let Some(a) = o.ts_at {
        fields.extend([a as usize, a as usize + 4]);
    }
    for n in 0..o.sack_blocks as usize {
        let at = o.sack_at as usize + 8 * n;
        fields.extend([at, at + 4]);
    }
    let mut full = seg.clone();
    let c = tcp_full_checksum(&full);
    full[16..18].copy_from_slice(&c.to_be_bytes());
    let mut csum = c;
    let partial_in = 0x1234;
    for at in fields {
        let v = r.u32();
        let before = full.clone();
        csum = tcp_options::write_u32(&mut full, at, v, Kind::Full, csum);
        assert_eq!(tcp_options::read_u32(&full, at), v);
        for (i, (x, y)) in before.iter().zip(&full).enumerate() {
            if !(at..at + 4).contains(&i) {
                assert_eq!(x, y, "write_u32 at {at} touched byte {i}");
            }
        }
        assert_eq!(
            tcp_options::write_u32(&mut full.clone(), at, v, Kind::Partial, partial_in),
            partial_in
        );
        let mut f2 = full.clone();
        f2[16..18].copy_from_slice(&csum.to_be_bytes());
        let want = tcp_full_checksum(&f2);
        assert!(
            csum == want || ones_eq(csum, want) && all_zero_but_csum(&f2),
            "write_u32 at {at}: {csum:04x} != {want:04x}"
        );
        full[16..18].copy_from_slice(&csum.to_be_bytes());
    }
    // Out of range writes change nothing.
    let n = full.len();
    assert_eq!(
        tcp_options::write_u32(&mut full, n - 3, 7, Kind::Full, 0xbeef),
        0xbeef
    );
    assert_eq!(tcp_options::read_u32(&full, n - 3), 0);
}

fn all_zero_but_csum(seg: &[u8]) -> bool {
    seg.iter()
        .enumerate()
        .all(|(i, b)| i == 16 || i == 17 || *b == 0)
}
