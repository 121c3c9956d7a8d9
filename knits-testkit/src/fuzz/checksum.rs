//! The checksum target: incremental updates (RFC 1624) against full recomputation (RFC 1071).

use knits_core::checksum::{self, Kind};
use knits_core::wire::tcp_options::{self};

use super::frame::ones_eq;
use super::reader::Reader;

fn naive_sum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    for (i, b) in data.iter().enumerate() {
        s += if i % 2 == 0 {
            (*b as u64) << 8
        } else {
            *b as u64
        };
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Checksum target. Byte 0: edit count; bytes 1..: a buffer whose first word is the checksum
/// field (at most 256 bytes, given by byte 1), then edits of (offset, width, value).
pub fn check_checksum(data: &[u8]) {
    let mut r = Reader::new(data);
    let edits = r.u8() % 16;
    let blen = r.u8() as usize;
    let mut buf = r.bytes(blen).to_vec();
    // The plain sum against a naive one, and split sums.
    assert_eq!(
        checksum::fold(checksum::sum(&buf, 0)),
        naive_sum(&buf),
        "sum"
    );
    let cut = (buf.len() / 2) & !1;
    let split = checksum::sum(&buf[cut..], checksum::sum(&buf[..cut], 0));
    assert!(ones_eq(checksum::fold(split), naive_sum(&buf)), "split sum");
    assert_eq!(
        checksum::checksum(&buf),
        !checksum::fold(checksum::sum(&buf, 0))
    );
    if buf.len() % 2 == 1 {
        buf.push(0);
    }
    if buf.len() < 8 {
        return;
    }
    buf[0] = 0;
    buf[1] = 0;
    let full = |b: &[u8]| -> u16 {
        let mut c = b.to_vec();
        c[0] = 0;
        c[1] = 0;
        checksum::checksum(&c)
    };
    let mut hc = full(&buf);
    // A pseudo-header too: a partial sum kept across address edits.
    let mut src = [r.u8(), r.u8(), r.u8(), r.u8()];
    let dst = [r.u8(), r.u8(), r.u8(), r.u8()];
    let len = buf.len() as u16;
    let mut partial = checksum::fold(checksum::pseudo_header_sum(src, dst, 6, len));
    for _ in 0..edits {
        let (off, width, v) = (r.u8() as usize, r.u8(), r.u32());
        match width % 4 {
            0 => {
                let i = 2 + 2 * (off % ((buf.len() - 2) / 2));
                let old = u16::from_be_bytes([buf[i], buf[i + 1]]);
                buf[i..i + 2].copy_from_slice(&(v as u16).to_be_bytes());
                hc = checksum::update16(hc, old, v as u16);
                let p =
                    checksum::update16_partial(checksum::update16_partial(partial, 0, old), old, 0);
                assert!(ones_eq(p, partial), "a partial update and its inverse");
                assert_eq!(
                    checksum::segment_update16(Kind::Partial, hc, old, v as u16),
                    hc
                );
            }
            1 => {
                let i = 2 + 2 * (off % ((buf.len() - 4) / 2));
                let old = u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
                buf[i..i + 4].copy_from_slice(&v.to_be_bytes());
                hc = checksum::update32(hc, old, v);
                assert_eq!(
                    checksum::segment_update32(Kind::Full, 0x1234, old, old),
                    checksum::update32(0x1234, old, old)
                );
            }
            2 => {
                // Any alignment, through the option rewriter.
                let i = 2 + off % (buf.len() - 5);
                buf[0..2].copy_from_slice(&hc.to_be_bytes());
                hc = tcp_options::write_u32(&mut buf, i, v, Kind::Full, hc);
            }
            _ => {
                // Address edit: full checksum over a pseudo-header and the partial sum.
                let old = u32::from_be_bytes(src);
                let ph_old = checksum::pseudo_header_sum(src, dst, 6, len);
                src = v.to_be_bytes();
                let ph_new = checksum::pseudo_header_sum(src, dst, 6, len);
                let mut c = buf.clone();
                c[0] = 0;
                c[1] = 0;
                let before = !checksum::fold(checksum::sum(&c, ph_old));
                let after = checksum::pseudo_update32(Kind::Full, before, old, v);
                let want = !checksum::fold(checksum::sum(&c, ph_new));
                assert_eq!(after, want, "pseudo-header address update");
                partial = checksum::pseudo_update32(Kind::Partial, partial, old, v);
                assert!(
                    ones_eq(partial, checksum::fold(ph_new)),
                    "partial address update"
                );
            }
        }
        let want = full(&buf);
        let zero = buf[2..].iter().all(|b| *b == 0);
        assert!(
            hc == want || zero && ones_eq(hc, want),
            "incremental {hc:04x} != full {want:04x}"
        );
    }
}
