//! pcapng read and write through the `pcap-file` crate: one interface per switch port,
//! interface index = port id (the layout knits-host's captures have).
//!
//! The reader takes any section byte order, honours each interface's `if_tsresol`, reads
//! Enhanced and Simple Packet blocks and skips every other block type. A
//! packet whose `epb_flags` mark it as outbound is reported as such, so a capture of both
//! directions can be replayed from the ingress side only. Malformed input is an error with the
//! byte offset and what is wrong, never a panic.
//!
//! pcap-file 2 hands an EPB's timestamp field over as a count of nanoseconds whatever the
//! interface's `if_tsresol` says (knits-host/src/pcap.rs notes the same). Both directions here
//! therefore treat that count as the raw field: the writer declares the default resolution
//! (microseconds) and passes the microsecond count; the reader scales the raw count by the
//! interface's resolution.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::SectionHeaderBlock;
use pcap_file::pcapng::{Block, PcapNgParser, PcapNgWriter};
use pcap_file::{DataLink, Endianness};

/// `epb_flags` direction bits: inbound.
const FLAGS_IN: u32 = 1;
/// `epb_flags` direction bits: outbound.
const FLAGS_OUT: u32 = 2;

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

/// Timestamp units per second of an interface (`if_tsresol`, default 10^6).
fn units_per_s(idb: &InterfaceDescriptionBlock) -> Option<u64> {
    let mut units = 1_000_000u64;
    for o in &idb.options {
        if let InterfaceDescriptionOption::IfTsResol(v) = o {
            let exp = (v & 0x7f) as u32;
            units = if v & 0x80 == 0 {
                10u64.checked_pow(exp)
            } else {
                2u64.checked_pow(exp)
            }?;
        }
    }
    Some(units.max(1))
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
        if m != 0x0A0D_0D0A {
            return Err(err(
                0,
                "not a pcapng file: it must start with a Section Header Block (0x0A0D0D0A)",
            ));
        }
    }
    if bytes.is_empty() {
        return Err(err(0, "empty file: no Section Header Block"));
    }
    let (mut rest, mut parser) = PcapNgParser::new(bytes).map_err(|e| {
        err(
            0,
            &format!("{e} (truncated or corrupt section header block)"),
        )
    })?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let at = bytes.len() - rest.len();
        let (next, block) = parser
            .next_block(rest)
            .map_err(|e| err(at, &format!("{e} (truncated or corrupt block)")))?;
        rest = next;
        let (port, ts, data, inbound) = match block {
            Block::EnhancedPacket(epb) => {
                let inbound = epb.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Flags(f) => Some(match f & 3 {
                        FLAGS_IN => Some(true),
                        FLAGS_OUT => Some(false),
                        _ => None,
                    }),
                    _ => None,
                });
                let ts = epb.timestamp.as_nanos();
                (epb.interface_id, Some(ts), epb.data, inbound.flatten())
            }
            Block::SimplePacket(spb) => (0, None, spb.data, None),
            _ => continue,
        };
        let idb = parser.interfaces().get(port as usize).ok_or_else(|| {
            err(
                at,
                &if ts.is_some() {
                    format!("packet names interface {port}, which was not described")
                } else {
                    "simple packet block before any interface".to_string()
                },
            )
        })?;
        if idb.linktype != DataLink::ETHERNET {
            return Err(err(
                at,
                &format!(
                    "interface {port} has link type {:?}, only Ethernet (1) is replayed",
                    idb.linktype
                ),
            ));
        }
        let units =
            units_per_s(idb).ok_or_else(|| err(at, "if_tsresol beyond 64-bit timestamps"))?;
        let ts_us = ts.map_or(0, |t| (t * 1_000_000 / units as u128) as u64);
        let port = u16::try_from(port).map_err(|_| err(at, "interface index too large"))?;
        out.push(Packet {
            port,
            ts_us,
            data: data.into_owned(),
            inbound,
        });
    }
    Ok(out)
}

/// Writes a pcapng capture (little endian, microsecond timestamps) with `ports` Ethernet
/// interfaces; each packet is `(port, ts_us, frame)`, marked inbound.
pub fn write<W: Write>(
    w: &mut W,
    ports: u16,
    packets: &[(u16, u64, &[u8])],
) -> std::io::Result<()> {
    let io = |e: pcap_file::PcapError| match e {
        pcap_file::PcapError::IoError(e) => e,
        e => std::io::Error::new(std::io::ErrorKind::InvalidData, format!("pcapng: {e}")),
    };
    let section = SectionHeaderBlock {
        endianness: Endianness::Little,
        major_version: 1,
        minor_version: 0,
        section_length: -1,
        options: vec![],
    };
    let mut w = PcapNgWriter::with_section_header(w, section).map_err(io)?;
    for _ in 0..ports {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![],
        })
        .map_err(io)?;
    }
    for (port, ts_us, data) in packets {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: *port as u32,
            // The raw field is the microsecond count (see the module doc).
            timestamp: Duration::from_nanos(*ts_us),
            original_len: data.len() as u32,
            data: Cow::Borrowed(data),
            options: vec![EnhancedPacketOption::Flags(FLAGS_IN)],
        })
        .map_err(io)?;
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

    #[test]
    fn big_endian_nanosecond_outbound_capture_reads_back() {
        // A capture unlike ours: big endian, nanosecond interfaces, a name block to skip, an
        // outbound packet (knits-host marks the frames it wrote so).
        let mut v = Vec::new();
        let section = SectionHeaderBlock {
            endianness: Endianness::Big,
            ..Default::default()
        };
        let mut w = PcapNgWriter::with_section_header(&mut v, section).unwrap();
        for _ in 0..2 {
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfTsResol(9)],
            })
            .unwrap();
        }
        let frame = [0x11u8; 64];
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 1,
            timestamp: Duration::from_nanos(7_000_123_456),
            original_len: 64,
            data: Cow::Borrowed(&frame[..]),
            options: vec![EnhancedPacketOption::Flags(FLAGS_OUT)],
        })
        .unwrap();
        let p = read(&v).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].port, p[0].ts_us, p[0].inbound),
            (1, 7_000_123, Some(false))
        );
        assert_eq!(p[0].data, frame);
    }

    #[test]
    fn every_single_byte_corruption_is_an_error_or_a_read_never_a_panic() {
        let v = sample();
        for i in 0..v.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut bad = v.clone();
                bad[i] ^= x;
                let _ = read(&bad);
            }
        }
    }

    #[test]
    fn tshark_reads_what_we_write_where_it_is_installed() {
        let Ok(o) = std::process::Command::new("tshark")
            .arg("--version")
            .output()
        else {
            eprintln!("tshark not installed: only the pcap-file read-back above ran");
            return;
        };
        assert!(o.status.success());
        let path =
            std::env::temp_dir().join(format!("knits-np-sim-pcap-{}.pcapng", std::process::id()));
        std::fs::write(&path, sample()).unwrap();
        let o = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args([
                "-T",
                "fields",
                "-e",
                "frame.interface_id",
                "-e",
                "frame.time_epoch",
                "-e",
                "frame.len",
            ])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let out = String::from_utf8_lossy(&o.stdout);
        let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
        assert_eq!(rows.len(), 2, "{out}");
        assert_eq!((rows[0][0], rows[0][2]), ("0", "60"));
        assert!(rows[0][1].starts_with("1.000001"), "{out}");
        assert_eq!((rows[1][0], rows[1][2]), ("2", "61"));
        assert!(rows[1][1].starts_with("5000.000000"), "{out}");
    }
}
