//! A seeded fault injector per port and direction: loss, reordering, duplication, corruption.
//!
//! The random stream is SplitMix64 (Steele, Lea, Flood 2014) from `rand_xoshiro`, the one seeded
//! generator of knits-host: a fixed algorithm (a test pins its first outputs), so a seed gives the
//! same faults on every build, and a failing run can be replayed exactly from the seed it printed.
//!
//! Corruption never produces a frame that a receiver would accept. A frame whose checksum is
//! partial (`NEEDS_CSUM`) carries no real transport checksum yet, so a flipped payload byte would
//! be delivered as good data. Hence: a non-GSO partial frame first gets its checksum completed in
//! software (as a NIC would), then one byte covered by it is flipped; a GSO frame (whose checksums
//! are per segment, computed later) gets one byte of its IPv4 header flipped instead, which the
//! IPv4 header checksum covers. Frames without any checksum (ARP; UDP with checksum 0) are not
//! corrupted in their body: ARP is left alone, and UDP gets an IPv4 header byte.

use std::time::Duration;

use rand_xoshiro::SplitMix64;
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::vnet::{self, VnetHdr};

/// Fault rates (each a probability per frame, 0.0..=1.0) and the seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is held back (and so overtaken by later frames).
    pub reorder: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability a frame is corrupted (then dropped by a checksum downstream).
    pub corrupt: f64,
    /// Seed; each port and direction derives its own stream from it.
    pub seed: u64,
    /// Shortest hold-back of a reordered frame, microseconds.
    pub reorder_min_us: u64,
    /// Longest hold-back of a reordered frame, microseconds.
    pub reorder_max_us: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            seed: 1,
            reorder_min_us: 200,
            reorder_max_us: 2000,
        }
    }
}

impl FaultConfig {
    /// True when any rate is non-zero.
    pub fn active(&self) -> bool {
        self.loss > 0.0 || self.reorder > 0.0 || self.duplicate > 0.0 || self.corrupt > 0.0
    }

    /// Checks the rates and delays, saying what to fix.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "fault rate {name} = {v} must lie in 0.0..=1.0 (0.01 is 1%)"
                ));
            }
        }
        if self.reorder_min_us > self.reorder_max_us {
            return Err(format!(
                "reorder_min_us ({}) must not exceed reorder_max_us ({})",
                self.reorder_min_us, self.reorder_max_us
            ));
        }
        Ok(())
    }
}

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Lose it.
    pub drop: bool,
    /// Deliver a second copy.
    pub duplicate: bool,
    /// Hold it back this long before delivering.
    pub delay: Option<Duration>,
    /// Corrupt it (see [`Injector::corrupt`]).
    pub corrupt: bool,
}

impl Decision {
    /// Deliver unchanged.
    pub const PASS: Decision = Decision {
        drop: false,
        duplicate: false,
        delay: None,
        corrupt: false,
    };
}

/// What an injector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Frames that went through the injector.
    pub seen: u64,
    /// Frames lost.
    pub dropped: u64,
    /// Frames delivered twice.
    pub duplicated: u64,
    /// Frames held back.
    pub reordered: u64,
    /// Frames corrupted.
    pub corrupted: u64,
}

impl std::ops::AddAssign<&FaultStats> for FaultStats {
    fn add_assign(&mut self, o: &FaultStats) {
        self.seen += o.seen;
        self.dropped += o.dropped;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.corrupted += o.corrupted;
    }
}

/// The injector of one port and direction.
#[derive(Debug, Clone)]
pub struct Injector {
    cfg: FaultConfig,
    rng: SplitMix64,
    /// What it did so far.
    pub stats: FaultStats,
}

impl Injector {
    /// An injector whose stream is derived from the seed and `stream` (e.g. 2 * port + direction).
    pub fn new(cfg: FaultConfig, stream: u64) -> Injector {
        let s = cfg.seed ^ stream.wrapping_mul(0xd605_bbb5_8c8a_bd1d);
        let state = SplitMix64::seed_from_u64(s).next_u64();
        Injector {
            cfg,
            rng: SplitMix64::seed_from_u64(state),
            stats: FaultStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &FaultConfig {
        &self.cfg
    }

    fn next(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A uniform draw in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn chance(&mut self, p: f64) -> bool {
        // Always draw, so the stream's position does not depend on the rates.
        let u = self.unit();
        u < p
    }

    /// Decides the fate of the next frame.
    pub fn decide(&mut self) -> Decision {
        self.stats.seen += 1;
        let drop = self.chance(self.cfg.loss);
        let duplicate = self.chance(self.cfg.duplicate);
        let reorder = self.chance(self.cfg.reorder);
        let corrupt = self.chance(self.cfg.corrupt);
        let span = self
            .cfg
            .reorder_max_us
            .saturating_sub(self.cfg.reorder_min_us)
            + 1;
        let delay_us = self.cfg.reorder_min_us + self.next() % span;
        if drop {
            self.stats.dropped += 1;
            return Decision {
                drop: true,
                ..Decision::PASS
            };
        }
        if duplicate {
            self.stats.duplicated += 1;
        }
        if reorder {
            self.stats.reordered += 1;
        }
        Decision {
            drop: false,
            duplicate,
            delay: reorder.then(|| Duration::from_micros(delay_us)),
            corrupt,
        }
    }

    /// Corrupts `frame` (an Ethernet frame with virtio-net header `hdr`) so that a checksum
    /// downstream rejects it. Returns false when the frame has nothing a checksum covers (ARP,
    /// non-IPv4): it is then left as it is.
    pub fn corrupt(&mut self, hdr: &mut VnetHdr, frame: &mut [u8]) -> bool {
        let r = self.next();
        let flip = ((r >> 8) as u8).max(1);
        if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] || frame[14] >> 4 != 4 {
            return false;
        }
        let ip_len = u16::from_be_bytes([frame[16], frame[17]]) as usize;
        let end = (14 + ip_len).min(frame.len());
        // The IPv4 identification field: covered by the header checksum, read by nobody else.
        let ip_id_byte = 18 + (r & 1) as usize;
        let at = if hdr.is_gso() {
            ip_id_byte
        } else {
            if hdr.needs_csum() && vnet::complete_checksum(hdr, frame).is_err() {
                return false;
            }
            let udp_no_csum = frame[23] == 17 && frame.len() >= 42 && frame[40..42] == [0, 0];
            if udp_no_csum || end <= 14 {
                ip_id_byte
            } else {
                14 + (r >> 16) as usize % (end - 14)
            }
        };
        frame[at] ^= flip;
        self.stats.corrupted += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{checksums_ok, partial_hdr, tcp_frame};

    fn cfg(loss: f64, reorder: f64, dup: f64, corrupt: f64) -> FaultConfig {
        FaultConfig {
            loss,
            reorder,
            duplicate: dup,
            corrupt,
            seed: 42,
            ..FaultConfig::default()
        }
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 0 (as in the reference implementation): the fault streams of a
        // seed stay those of earlier builds.
        let mut s = SplitMix64::seed_from_u64(0);
        assert_eq!(s.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(s.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn same_seed_same_faults() {
        let mut a = Injector::new(cfg(0.1, 0.1, 0.1, 0.1), 3);
        let mut b = Injector::new(cfg(0.1, 0.1, 0.1, 0.1), 3);
        let mut c = Injector::new(cfg(0.1, 0.1, 0.1, 0.1), 4);
        let da: Vec<_> = (0..1000).map(|_| a.decide()).collect();
        let db: Vec<_> = (0..1000).map(|_| b.decide()).collect();
        let dc: Vec<_> = (0..1000).map(|_| c.decide()).collect();
        assert_eq!(da, db);
        assert_ne!(da, dc, "different streams must differ");
        assert_eq!(a.stats, b.stats);
    }

    #[test]
    fn rates_are_respected() {
        let mut inj = Injector::new(cfg(0.01, 0.05, 0.01, 0.02), 0);
        for _ in 0..200_000 {
            inj.decide();
        }
        let s = inj.stats;
        let near = |n: u64, p: f64| (n as f64 / 200_000.0 - p).abs() < p * 0.15;
        assert!(near(s.dropped, 0.01), "{s:?}");
        // Duplication, reordering are counted among frames that were not lost.
        assert!(near(s.duplicated, 0.01 * 0.99), "{s:?}");
        assert!(near(s.reordered, 0.05 * 0.99), "{s:?}");
    }

    #[test]
    fn no_faults_when_rates_are_zero() {
        let mut inj = Injector::new(FaultConfig::default(), 9);
        assert!(!inj.config().active());
        for _ in 0..10_000 {
            assert_eq!(inj.decide(), Decision::PASS);
        }
    }

    #[test]
    fn reorder_delay_in_range() {
        let mut inj = Injector::new(cfg(0.0, 1.0, 0.0, 0.0), 1);
        for _ in 0..1000 {
            let d = inj.decide().delay.unwrap();
            assert!(d >= Duration::from_micros(200) && d <= Duration::from_micros(2000));
        }
    }

    #[test]
    fn validate_says_what_to_fix() {
        assert!(cfg(0.5, 0.0, 0.0, 0.0).validate().is_ok());
        assert!(
            cfg(1.5, 0.0, 0.0, 0.0)
                .validate()
                .unwrap_err()
                .contains("loss")
        );
        assert!(
            cfg(0.0, -0.1, 0.0, 0.0)
                .validate()
                .unwrap_err()
                .contains("reorder")
        );
        let c = FaultConfig {
            reorder_min_us: 5,
            reorder_max_us: 1,
            ..FaultConfig::default()
        };
        assert!(c.validate().is_err());
    }

    /// Corrupting a full-checksum frame always breaks a checksum (IPv4 or TCP).
    #[test]
    fn corrupted_full_frames_fail_a_checksum() {
        let mut inj = Injector::new(cfg(0.0, 0.0, 0.0, 1.0), 5);
        for i in 0..2000 {
            let mut f = tcp_frame(&vec![i as u8; i % 300], i % 3 != 0);
            assert!(checksums_ok(&f));
            let mut h = VnetHdr::ZERO;
            assert!(inj.corrupt(&mut h, &mut f));
            assert!(
                !checksums_ok(&f),
                "frame {i} still verifies after corruption"
            );
        }
    }

    /// A partial-checksum frame is completed first, so the corruption is detectable; the
    /// header no longer claims NEEDS_CSUM.
    #[test]
    fn corrupted_partial_frames_are_completed_first() {
        let mut inj = Injector::new(cfg(0.0, 0.0, 0.0, 1.0), 6);
        for i in 0..500 {
            let mut f = tcp_frame(&vec![0x5a; 1 + i], true);
            let mut h = partial_hdr(&mut f);
            assert!(inj.corrupt(&mut h, &mut f));
            assert!(!h.needs_csum());
            assert!(!checksums_ok(&f));
        }
    }

    /// A GSO frame gets an IPv4 header byte flipped: the IPv4 header checksum fails.
    #[test]
    fn corrupted_gso_frames_break_the_ip_header() {
        let mut inj = Injector::new(cfg(0.0, 0.0, 0.0, 1.0), 7);
        let mut f = tcp_frame(&[7; 3000], true);
        let mut h = partial_hdr(&mut f);
        h.gso_type = vnet::GSO_TCPV4;
        h.gso_size = 1448;
        let before = f.clone();
        assert!(inj.corrupt(&mut h, &mut f));
        assert!(h.needs_csum(), "a GSO frame keeps its partial checksum");
        let diff: Vec<usize> = (0..f.len()).filter(|&i| f[i] != before[i]).collect();
        assert_eq!(diff.len(), 1);
        assert!((14..34).contains(&diff[0]));
        assert_ne!(
            knits_core::checksum::fold(knits_core::checksum::sum(&f[14..34], 0)),
            0xffff
        );
    }

    #[test]
    fn arp_and_short_frames_are_left_alone() {
        let mut inj = Injector::new(cfg(0.0, 0.0, 0.0, 1.0), 8);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let copy = arp.clone();
        assert!(!inj.corrupt(&mut VnetHdr::ZERO.clone(), &mut arp));
        assert_eq!(arp, copy);
        assert!(!inj.corrupt(&mut VnetHdr::ZERO.clone(), &mut [0u8; 5]));
    }
}
