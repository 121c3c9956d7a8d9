//! A pcapng reader and writer: one interface per switch port, interface index = port id.
//!
//! The reader takes Section Header, Interface Description and Enhanced / Simple Packet blocks in
//! either byte order and skips every other block type. A packet whose `epb_flags` mark it as
//! outbound is reported as such, so a capture of both directions can be replayed from the ingress
//! side only. Malformed input is an error with the byte offset and what is wrong, never a panic.

use std::fmt;
use std::io::Write;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const SPB: u32 = 3;
const EPB: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;
/// Largest block accepted (64 MiB), so a corrupt length cannot make us allocate gigabytes.
const MAX_BLOCK: usize = 64 << 20;

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Interface index within its section = switch port.
    pub port: u16,
    /// Timestamp in microseconds.
    pub ts_us: u64,
    /// The frame bytes (captured part).
    pub data: Vec<u8>,
    /// `Some(true)` inbound, `Some(false)` outbound, `None` when the capture does not say.
    pub inbound: Option<bool>,
}

/// Why a capture cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcapError {
    /// Byte offset of the block at fault.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PcapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pcapng at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for PcapError {}

#[derive(Clone, Copy)]
struct Iface {
    link: u16,
    /// Timestamp units per second.
    units_per_s: u64,
}

fn rd_u16(b: &[u8], at: usize, le: bool) -> Option<u16> {
    let s: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if le {
        u16::from_le_bytes(s)
    } else {
        u16::from_be_bytes(s)
    })
}

fn rd_u32(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(s)
    } else {
        u32::from_be_bytes(s)
    })
}

/// Reads every packet of a pcapng capture.
pub fn read(bytes: &[u8]) -> Result<Vec<Packet>, PcapError> {
    let err = |offset: usize, m: &str| PcapError {
        offset,
        message: m.to_string(),
    };
    if bytes.len() >= 4 {
        let m = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if matches!(m, 0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1) {
            return Err(err(
                0,
                "this is a classic pcap file, which has no interfaces to tell the switch ports \
                 apart; write pcapng with one interface per port (knits-host --pcap does)",
            ));
        }
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut le = true;
    let mut ifaces: Vec<Iface> = Vec::new();
    let mut seen_shb = false;
    while at < bytes.len() {
        if bytes.len() - at < 12 {
            return Err(err(at, "truncated block header (fewer than 12 bytes left)"));
        }
        let raw_type = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        if raw_type == SHB {
            let bom = rd_u32(bytes, at + 8, true).ok_or_else(|| err(at, "truncated header"))?;
            le = match bom {
                BYTE_ORDER_MAGIC => true,
                0x4D3C_2B1A => false,
                _ => return Err(err(at, "section header with a bad byte-order magic")),
            };
            seen_shb = true;
            ifaces.clear();
        } else if !seen_shb {
            return Err(err(
                0,
                "not a pcapng file: it must start with a Section Header Block (0x0A0D0D0A)",
            ));
        }
        let btype = rd_u32(bytes, at, le).unwrap_or(0);
        let blen = rd_u32(bytes, at + 4, le).unwrap_or(0) as usize;
        if blen < 12 || !blen.is_multiple_of(4) || blen > MAX_BLOCK {
            return Err(err(
                at,
                &format!("bad block length {blen} (must be >= 12, a multiple of 4)"),
            ));
        }
        let end = at
            .checked_add(blen)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(|| {
                err(
                    at,
                    &format!("block of {blen} bytes runs past the end of the file (truncated?)"),
                )
            })?;
        if rd_u32(bytes, end - 4, le) != Some(blen as u32) {
            return Err(err(
                at,
                "trailing block length does not match the leading one",
            ));
        }
        let body = &bytes[at + 8..end - 4];
        match btype {
            IDB => {
                let link =
                    rd_u16(body, 0, le).ok_or_else(|| err(at, "truncated interface block"))?;
                let mut units_per_s = 1_000_000u64;
                // Options start after linktype(2) reserved(2) snaplen(4).
                let mut o = 8;
                while let (Some(code), Some(len)) = (rd_u16(body, o, le), rd_u16(body, o + 2, le)) {
                    if code == 0 {
                        break;
                    }
                    let len = len as usize;
                    if code == 9 && len >= 1 {
                        let v = *body
                            .get(o + 4)
                            .ok_or_else(|| err(at, "truncated if_tsresol"))?;
                        let exp = (v & 0x7f) as u32;
                        units_per_s = if v & 0x80 == 0 {
                            10u64.checked_pow(exp)
                        } else {
                            2u64.checked_pow(exp)
                        }
                        .ok_or_else(|| err(at, "if_tsresol beyond 64-bit timestamps"))?;
                    }
                    o += 4 + len.div_ceil(4) * 4;
                }
                ifaces.push(Iface {
                    link,
                    units_per_s: units_per_s.max(1),
                });
            }
            EPB => {
                let h = |i| rd_u32(body, i, le).ok_or_else(|| err(at, "truncated packet block"));
                let ifid = h(0)? as usize;
                let ts = ((h(4)? as u64) << 32) | h(8)? as u64;
                let cap = h(12)? as usize;
                let data = body
                    .get(20..20 + cap)
                    .ok_or_else(|| err(at, "captured length runs past the block"))?;
                let iface = *ifaces.get(ifid).ok_or_else(|| {
                    err(
                        at,
                        &format!("packet names interface {ifid}, which was not described"),
                    )
                })?;
                if iface.link != LINKTYPE_ETHERNET {
                    return Err(err(
                        at,
                        &format!(
                            "interface {ifid} has link type {}, only Ethernet (1) is replayed",
                            iface.link
                        ),
                    ));
                }
                let mut inbound = None;
                let mut o = 20 + cap.div_ceil(4) * 4;
                while let (Some(code), Some(len)) = (rd_u16(body, o, le), rd_u16(body, o + 2, le)) {
                    if code == 0 {
                        break;
                    }
                    if code == 2 && len == 4 {
                        let flags = rd_u32(body, o + 4, le).unwrap_or(0);
                        inbound = match flags & 3 {
                            1 => Some(true),
                            2 => Some(false),
                            _ => None,
                        };
                    }
                    o += 4 + (len as usize).div_ceil(4) * 4;
                }
                let ts_us = (ts as u128 * 1_000_000 / iface.units_per_s as u128) as u64;
                let port = u16::try_from(ifid).map_err(|_| err(at, "interface index too large"))?;
                out.push(Packet {
                    port,
                    ts_us,
                    data: data.to_vec(),
                    inbound,
                });
            }
            SPB => {
                let iface = *ifaces
                    .first()
                    .ok_or_else(|| err(at, "simple packet block before any interface"))?;
                if iface.link != LINKTYPE_ETHERNET {
                    return Err(err(at, "interface 0 is not Ethernet"));
                }
                let orig = rd_u32(body, 0, le)
                    .ok_or_else(|| err(at, "truncated simple packet block"))?
                    as usize;
                let cap = orig.min(body.len().saturating_sub(4));
                out.push(Packet {
                    port: 0,
                    ts_us: 0,
                    data: body[4..4 + cap].to_vec(),
                    inbound: None,
                });
            }
            _ => {}
        }
        at = end;
    }
    if !seen_shb {
        return Err(err(0, "empty file: no Section Header Block"));
    }
    Ok(out)
}

/// Writes a pcapng capture (little endian, microsecond timestamps) with `ports` Ethernet
/// interfaces; each packet is `(port, ts_us, frame)`.
pub fn write<W: Write>(
    w: &mut W,
    ports: u16,
    packets: &[(u16, u64, &[u8])],
) -> std::io::Result<()> {
    let mut block = |btype: u32, body: &[u8]| -> std::io::Result<()> {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        w.write_all(&btype.to_le_bytes())?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(body)?;
        w.write_all(&[0u8; 3][..pad])?;
        w.write_all(&len.to_le_bytes())
    };
    let mut shb = Vec::new();
    shb.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
    block(SHB, &shb)?;
    for _ in 0..ports {
        let mut idb = Vec::new();
        idb.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&0u32.to_le_bytes());
        block(IDB, &idb)?;
    }
    for (port, ts, data) in packets {
        let mut epb = Vec::with_capacity(24 + data.len());
        epb.extend_from_slice(&(*port as u32).to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(*ts as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(data);
        epb.resize(epb.len().div_ceil(4) * 4, 0);
        // epb_flags: inbound.
        epb.extend_from_slice(&2u16.to_le_bytes());
        epb.extend_from_slice(&4u16.to_le_bytes());
        epb.extend_from_slice(&1u32.to_le_bytes());
        epb.extend_from_slice(&[0u8; 4]); // opt_endofopt
        block(EPB, &epb)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let a = [0xaau8; 60];
        let b = [0xbbu8; 61];
        let mut v = Vec::new();
        write(
            &mut v,
            3,
            &[(0, 1_000_001, &a[..]), (2, 5_000_000_000, &b[..])],
        )
        .unwrap();
        v
    }

    #[test]
    fn write_then_read() {
        let p = read(&sample()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].port, p[0].ts_us, p[0].data.len()), (0, 1_000_001, 60));
        assert_eq!(
            (p[1].port, p[1].ts_us, p[1].data.len()),
            (2, 5_000_000_000, 61)
        );
        assert_eq!(p[1].inbound, Some(true));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let v = sample();
        for n in 0..v.len() {
            let r = read(&v[..n]);
            if n == 0 {
                assert!(r.is_err());
                continue;
            }
            // Block boundaries give a shorter valid file; everything else is an error.
            if let Err(e) = r {
                assert!(!e.message.is_empty());
            }
        }
        let mut bad = v.clone();
        bad[4] = 0xff; // SHB length
        assert!(read(&bad).unwrap_err().to_string().contains("block"));
    }

    #[test]
    fn classic_pcap_is_refused_with_advice() {
        let e = read(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]).unwrap_err();
        assert!(e.message.contains("pcapng"), "{e}");
    }
}
