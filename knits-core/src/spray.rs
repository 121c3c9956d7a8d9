//! Back-end choice for a new connection to the VIP (paper III.A: "Gateway round robin
//! distributes connection request").
//!
//! Three policies: round robin (the paper's), smooth weighted round robin (as nginx does it),
//! and Maglev consistent hashing of the client's address and port (Eisenbud et al., NSDI 2016),
//! whose lookup table is built once at start-up in fixed storage.

use core::hash::Hasher;
use siphasher::sip::SipHasher13;

use crate::config::{Backend, MAX_BACKENDS, SprayPolicy};

/// Size of the Maglev lookup table (a prime much larger than the number of back-ends).
pub const MAGLEV_M: usize = 4093;

/// Spray state.
#[derive(Debug, Clone)]
pub struct Spray {
    policy: SprayPolicy,
    rr_next: usize,
    current: [i32; MAX_BACKENDS],
    maglev: [u8; MAGLEV_M],
    k0: u64,
    k1: u64,
}

fn hash(k0: u64, k1: u64, data: &[u8], salt: u8) -> u64 {
    let mut h = SipHasher13::new_with_keys(k0, k1);
    h.write_u8(salt);
    h.write(data);
    h.finish()
}

impl Spray {
    /// Builds the spray state for `backends` (the Maglev table is populated here, once).
    pub fn new(policy: SprayPolicy, backends: &[Backend], seed: [u8; 16]) -> Spray {
        let mut k = [0u8; 8];
        k.copy_from_slice(&seed[..8]);
        let k0 = u64::from_le_bytes(k) ^ 0x6d61_676c_6576;
        k.copy_from_slice(&seed[8..]);
        let k1 = u64::from_le_bytes(k);
        let mut s = Spray {
            policy,
            rr_next: 0,
            current: [0; MAX_BACKENDS],
            maglev: [u8::MAX; MAGLEV_M],
            k0,
            k1,
        };
        if policy == SprayPolicy::Maglev {
            s.populate(backends);
        }
        s
    }

    /// Maglev population (paper section 3.4, with weights as extra turns per round).
    fn populate(&mut self, backends: &[Backend]) {
        let n = backends.len().min(MAX_BACKENDS);
        let mut offset = [0usize; MAX_BACKENDS];
        let mut skip = [0usize; MAX_BACKENDS];
        let mut next = [0usize; MAX_BACKENDS];
        for i in 0..n {
            let a = backends[i].addr.octets();
            offset[i] = (hash(self.k0, self.k1, &a, 1) % MAGLEV_M as u64) as usize;
            skip[i] = (hash(self.k0, self.k1, &a, 2) % (MAGLEV_M as u64 - 1)) as usize + 1;
        }
        let total_weight: usize = backends.iter().take(n).map(|b| b.weight as usize).sum();
        if total_weight == 0 {
            return;
        }
        let mut filled = 0;
        while filled < MAGLEV_M {
            for i in 0..n {
                for _ in 0..backends[i].weight {
                    // Next preferred slot of backend i that is still empty.
                    let mut c = (offset[i] + next[i] * skip[i]) % MAGLEV_M;
                    while self.maglev[c] != u8::MAX {
                        next[i] += 1;
                        c = (offset[i] + next[i] * skip[i]) % MAGLEV_M;
                    }
                    self.maglev[c] = i as u8;
                    next[i] += 1;
                    filled += 1;
                    if filled == MAGLEV_M {
                        return;
                    }
                }
            }
        }
    }

    /// Picks a back-end index for a new connection from `client` address and port, or `None`
    /// when every back-end has weight 0.
    pub fn pick(
        &mut self,
        backends: &[Backend],
        client: [u8; 4],
        client_port: u16,
    ) -> Option<usize> {
        let n = backends.len().min(MAX_BACKENDS);
        if n == 0 {
            return None;
        }
        match self.policy {
            SprayPolicy::RoundRobin => {
                for _ in 0..n {
                    let i = self.rr_next % n;
                    self.rr_next = (i + 1) % n;
                    if backends.get(i).is_some_and(|b| b.weight > 0) {
                        return Some(i);
                    }
                }
                None
            }
            SprayPolicy::Weighted => {
                // Smooth weighted round robin: add each weight, pick the largest, subtract total.
                let mut total = 0i32;
                let mut best: Option<(usize, i32)> = None;
                for (i, (be, cur)) in backends.iter().zip(self.current.iter_mut()).enumerate() {
                    let w = be.weight as i32;
                    if w == 0 {
                        continue;
                    }
                    *cur += w;
                    total += w;
                    if best.is_none_or(|(_, v)| *cur > v) {
                        best = Some((i, *cur));
                    }
                }
                let (b, _) = best?;
                if let Some(cur) = self.current.get_mut(b) {
                    *cur -= total;
                }
                Some(b)
            }
            SprayPolicy::Maglev => {
                let mut d = [0u8; 6];
                d[..4].copy_from_slice(&client);
                d[4..].copy_from_slice(&client_port.to_be_bytes());
                let h = hash(self.k0, self.k1, &d, 3) as usize % MAGLEV_M;
                let i = self.maglev[h] as usize;
                if i < n { Some(i) } else { None }
            }
        }
    }
}

/// The shard (`0..shards`) that owns a TCP connection whose ephemeral endpoint is `addr`:`port`,
/// for a switch split into `shards` shared-nothing shards (knits-host `--shards`). The host
/// steers frames with it and the proxy picks the source port of a new leg with it, so both must
/// use this one function. A fixed mixer (SplitMix64's finalizer over address and port), not keyed:
/// the proxy and the switch agree without sharing a secret. `shards` 0 or 1: always 0.
pub fn shard_of(addr: [u8; 4], port: u16, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let mut z = (u64::from(u32::from_be_bytes(addr)) << 16) | u64::from(port);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % u64::from(shards)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use smoltcp::wire::Ipv4Address;

    fn backends(weights: &[u16]) -> heapless::Vec<Backend, MAX_BACKENDS> {
        let mut v = heapless::Vec::new();
        for (i, w) in weights.iter().enumerate() {
            let _ = v.push(Backend {
                addr: Ipv4Address::new(198, 19, i as u8 + 1, 2),
                port: i as u8 + 1,
                weight: *w,
            });
        }
        v
    }

    #[test]
    fn round_robin_cycles_and_skips_drained() {
        let b = backends(&[1, 0, 1]);
        let mut s = Spray::new(SprayPolicy::RoundRobin, &b, [0; 16]);
        let picks: heapless::Vec<usize, 6> = (0..6)
            .map(|_| s.pick(&b, [1, 2, 3, 4], 1).unwrap())
            .collect();
        assert_eq!(&picks[..], &[0, 2, 0, 2, 0, 2]);
        assert_eq!(
            Spray::new(SprayPolicy::RoundRobin, &backends(&[0, 0]), [0; 16]).pick(
                &backends(&[0, 0]),
                [0; 4],
                0
            ),
            None
        );
    }

    #[test]
    fn weighted_is_smooth_and_proportional() {
        let b = backends(&[5, 1, 1]);
        let mut s = Spray::new(SprayPolicy::Weighted, &b, [0; 16]);
        let picks: heapless::Vec<usize, 7> =
            (0..7).map(|_| s.pick(&b, [0; 4], 0).unwrap()).collect();
        // nginx's documented sequence for weights 5,1,1: a a b a c a a.
        assert_eq!(&picks[..], &[0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn maglev_is_consistent_and_moves_little_on_removal() {
        let b3 = Config::cluster(3, [0; 16]).backends;
        let mut s3 = Spray::new(SprayPolicy::Maglev, &b3, [5; 16]);
        let mut count = [0usize; 3];
        let mut first = [0usize; 2000];
        for p in 0..2000u16 {
            let i = s3.pick(&b3, [198, 18, 0, 2], p).unwrap();
            assert_eq!(s3.pick(&b3, [198, 18, 0, 2], p), Some(i));
            count[i] += 1;
            first[p as usize] = i;
        }
        for c in count {
            assert!((500..900).contains(&c), "uneven spread {count:?}");
        }
        // Drain backend 2: only its clients move.
        let mut b = b3.clone();
        b.truncate(2);
        let mut s2 = Spray::new(SprayPolicy::Maglev, &b, [5; 16]);
        let mut moved_others = 0;
        for p in 0..2000u16 {
            let i = s2.pick(&b, [198, 18, 0, 2], p).unwrap();
            if first[p as usize] != 2 && first[p as usize] != i {
                moved_others += 1;
            }
        }
        assert!(
            moved_others < 200,
            "{moved_others} of the surviving backends' clients moved"
        );
    }
    #[test]
    fn shard_of_is_spread_and_in_range() {
        assert_eq!(shard_of([1, 2, 3, 4], 5, 0), 0);
        assert_eq!(shard_of([1, 2, 3, 4], 5, 1), 0);
        for shards in 2..=4u32 {
            let mut count = [0u32; 4];
            for p in 32768..34768u16 {
                let s = shard_of([198, 18, 0, 2], p, shards);
                assert!(s < shards);
                assert_eq!(s, shard_of([198, 18, 0, 2], p, shards));
                count[s as usize] += 1;
            }
            let even = 2000 / shards;
            for c in &count[..shards as usize] {
                assert!(
                    c.abs_diff(even) < even / 5,
                    "uneven {count:?} over {shards}"
                );
            }
        }
        // The address matters too.
        assert!(
            (0..64u16).any(|p| shard_of([198, 19, 1, 2], p, 2) != shard_of([198, 19, 2, 2], p, 2))
        );
    }
}
