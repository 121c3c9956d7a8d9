//! Stage 7, neighbors: the ARP cache that gives a forwarded frame its next hop's MAC.
//!
//! A set-associative cache of [`SETS`] sets of [`WAYS`] entries, filled only from ARP (never
//! from IP source addresses: a flood of spoofed sources would evict the real hosts), the least
//! recently learned way of a set replaced first. Lookup is one hash and at most four compares.

use smoltcp::wire::EthernetAddress;

/// Sets in the cache.
pub const SETS: usize = 64;
/// Entries per set.
pub const WAYS: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Neighbor {
    ip: [u8; 4],
    mac: [u8; 6],
    valid: bool,
    /// When it was last learned (a counter), for replacement.
    stamp: u32,
}

/// The neighbor (ARP) cache.
#[derive(Debug)]
pub(super) struct Neighbors {
    sets: [[Neighbor; WAYS]; SETS],
    clock: u32,
}

impl Default for Neighbors {
    fn default() -> Self {
        Neighbors {
            sets: [[Neighbor::default(); WAYS]; SETS],
            clock: 0,
        }
    }
}

#[inline]
fn set_of(ip: [u8; 4]) -> usize {
    (u32::from_be_bytes(ip).wrapping_mul(0x9e37_79b1) >> 26) as usize % SETS
}

impl Neighbors {
    /// Learns `ip` at `mac` (multicast MACs and 0.0.0.0 are ignored).
    pub fn learn(&mut self, ip: [u8; 4], mac: [u8; 6]) {
        if mac[0] & 1 != 0 || ip == [0; 4] {
            return;
        }
        self.clock = self.clock.wrapping_add(1);
        let stamp = self.clock;
        let Some(set) = self.sets.get_mut(set_of(ip)) else {
            return;
        };
        let mut victim = 0;
        for (i, n) in set.iter().enumerate() {
            if n.valid && n.ip == ip {
                victim = i;
                break;
            }
            let v = &set[victim];
            if !n.valid || (v.valid && stamp.wrapping_sub(n.stamp) > stamp.wrapping_sub(v.stamp)) {
                victim = i;
            }
        }
        if let Some(n) = set.get_mut(victim) {
            *n = Neighbor {
                ip,
                mac,
                valid: true,
                stamp,
            };
        }
    }

    /// The MAC learned for `ip`, if any.
    #[inline]
    pub fn get(&self, ip: [u8; 4]) -> Option<EthernetAddress> {
        let set = self.sets.get(set_of(ip))?;
        set.iter()
            .find(|n| n.valid && n.ip == ip)
            .map(|n| EthernetAddress(n.mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_replaces_the_least_recently_learned() {
        let mut n = Neighbors::default();
        // Addresses that share a set.
        let mut same = (1u32..)
            .map(|i| i.to_be_bytes())
            .filter(|a| set_of(*a) == set_of([0, 0, 0, 1]));
        let ips: [[u8; 4]; 5] = core::array::from_fn(|_| same.next().unwrap());
        for (i, ip) in ips.iter().take(4).enumerate() {
            n.learn(*ip, [2, 0, 0, 0, 0, i as u8]);
        }
        // Relearning the first makes the second the oldest.
        n.learn(ips[0], [2, 0, 0, 0, 0, 9]);
        n.learn(ips[4], [2, 0, 0, 0, 0, 4]);
        assert_eq!(n.get(ips[0]), Some(EthernetAddress([2, 0, 0, 0, 0, 9])));
        assert_eq!(n.get(ips[1]), None);
        assert_eq!(n.get(ips[4]), Some(EthernetAddress([2, 0, 0, 0, 0, 4])));
        n.learn([9, 9, 9, 9], [1, 0, 0, 0, 0, 0]);
        assert_eq!(n.get([9, 9, 9, 9]), None, "multicast MACs are not learned");
    }
}
