//! The virtio-net header that a TAP opened with `IFF_VNET_HDR` puts before every frame.
//!
//! Layout (Linux `include/uapi/linux/virtio_net.h`, `struct virtio_net_hdr`, native byte order on
//! a little-endian host, as the tun driver uses it without `TUNSETVNETBE`):
//!
//! ```text
//! 0      flags        u8   NEEDS_CSUM (1) | DATA_VALID (2)
//! 1      gso_type     u8   NONE (0) | TCPV4 (1) | UDP (3) | TCPV6 (4), | ECN (0x80)
//! 2..4   hdr_len      u16  Ethernet + IP + TCP header bytes (a hint)
//! 4..6   gso_size     u16  MSS of the segments the frame stands for
//! 6..8   csum_start   u16  offset from the frame start where checksumming starts
//! 8..10  csum_offset  u16  where, from csum_start, the checksum goes
//! ```
//!
//! The switch never changes a frame's length, so a header read with a frame can be written back
//! with the forwarded frame unchanged.

use knits_core::checksum;

/// Size of the header this crate configures with `TUNSETVNETHDRSZ`.
pub const HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the
/// pseudo-header sum; the receiver (or whoever segments) completes it.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified already.
pub const F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP`.
pub const GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_ECN` (or-ed into the type).
pub const GSO_ECN: u8 = 0x80;

/// A parsed virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` / `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`.
    pub gso_type: u8,
    /// Header bytes (hint).
    pub hdr_len: u16,
    /// Segment size for GSO frames.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

/// Why a frame's checksum could not be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsumError {
    /// `csum_start + csum_offset + 2` lies beyond the frame.
    OutOfRange,
}

impl VnetHdr {
    /// The all-zero header of a frame without offloads (used for generated frames).
    pub const ZERO: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads the header from the first [`HDR_LEN`] bytes; `None` when fewer bytes exist.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b: &[u8; HDR_LEN] = b.get(..HDR_LEN)?.try_into().ok()?;
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_ne_bytes([b[2], b[3]]),
            gso_size: u16::from_ne_bytes([b[4], b[5]]),
            csum_start: u16::from_ne_bytes([b[6], b[7]]),
            csum_offset: u16::from_ne_bytes([b[8], b[9]]),
        })
    }

    /// Writes the header into the first [`HDR_LEN`] bytes of `b` (which must be that long).
    pub fn emit(&self, b: &mut [u8]) {
        if b.len() < HDR_LEN {
            return;
        }
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// True when the transport checksum is partial (pseudo-header sum only).
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// True when the frame stands for several segments (TSO/GSO).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// The checksum kind the core is told about for this frame.
    pub fn csum_kind(&self) -> checksum::Kind {
        if self.needs_csum() {
            checksum::Kind::Partial
        } else {
            checksum::Kind::Full
        }
    }
}

/// Completes a partial checksum in software, as a NIC would: sums `frame[csum_start..]` starting
/// from the pseudo-header sum already stored in the checksum field, stores the complement, and
/// clears `F_NEEDS_CSUM` in `hdr`. Only valid for a frame that is not GSO (a GSO frame's checksum
/// is per segment). A UDP checksum that comes out zero is sent as 0xffff (RFC 768).
pub fn complete_checksum(hdr: &mut VnetHdr, frame: &mut [u8]) -> Result<(), CsumError> {
    if !hdr.needs_csum() {
        return Ok(());
    }
    let start = hdr.csum_start as usize;
    let at = start + hdr.csum_offset as usize;
    if at + 2 > frame.len() || start > frame.len() {
        return Err(CsumError::OutOfRange);
    }
    // The field holds the uncomplemented pseudo-header sum; summing the segment including the
    // field therefore sums pseudo-header + segment.
    let mut c = !checksum::fold(checksum::sum(&frame[start..], 0));
    if c == 0 && hdr.csum_offset == 6 {
        // UDP: a computed zero is transmitted as all ones.
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    hdr.flags &= !F_NEEDS_CSUM;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_emit_roundtrip() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0xa5u8; HDR_LEN];
        h.emit(&mut b);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(h.needs_csum() && h.is_gso());
        assert_eq!(h.csum_kind(), checksum::Kind::Partial);
        assert_eq!(VnetHdr::parse(&b[..9]), None);
        let mut z = [0xa5u8; HDR_LEN];
        VnetHdr::ZERO.emit(&mut z);
        assert_eq!(z, [0; HDR_LEN]);
        assert_eq!(VnetHdr::ZERO.csum_kind(), checksum::Kind::Full);
        let ecn = VnetHdr {
            gso_type: GSO_ECN,
            ..VnetHdr::ZERO
        };
        assert!(!ecn.is_gso());
    }

    /// A TCP segment whose checksum field holds the pseudo-header sum, completed in software,
    /// equals the full RFC 1071 checksum.
    #[test]
    fn completes_partial_tcp_checksum() {
        let frame = crate::testutil::tcp_frame(b"hello, world", true);
        let mut partial = frame.clone();
        let mut hdr = crate::testutil::partial_hdr(&mut partial);
        assert_ne!(partial, frame);
        complete_checksum(&mut hdr, &mut partial).unwrap();
        assert_eq!(partial, frame);
        assert!(!hdr.needs_csum());
        // Out-of-range offsets are an error, not a panic.
        let mut bad = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 60000,
            csum_offset: 16,
            ..VnetHdr::ZERO
        };
        assert_eq!(
            complete_checksum(&mut bad, &mut partial),
            Err(CsumError::OutOfRange)
        );
    }
}
