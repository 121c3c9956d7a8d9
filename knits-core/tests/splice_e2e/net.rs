//! The simulated network's constants, its virtual clock and the hosts' timestamp clocks, the
//! hosts' addresses, and the ISN seeds.

use std::cell::Cell;

use knits_core::wire::control::Key;
use smoltcp::wire::{EthernetAddress, Ipv4Address};

pub(crate) const KEY: Key = *b"knits-e2e-key-01";
/// Client (0) and nodes A, B, C (1..=3). Host `h` sits behind switch port `h`.
pub(crate) const HOSTS: usize = 4;
pub(crate) const VIP: Ipv4Address = Ipv4Address::new(198, 18, 0, 10);
pub(crate) const CONTROL_SRC_PORT: u16 = 7000;
/// The switch's TIME-WAIT in these tests.
pub(crate) const TIME_WAIT_MS: u64 = 10_000;

// ------------------------------------------------------------------------------------------------
// The virtual clock and the hosts' timestamp clocks.

thread_local! {
    pub(crate) static NOW_MS: Cell<u64> = const { Cell::new(0) };
    pub(crate) static TS_OFF: Cell<[u32; HOSTS]> = const { Cell::new([0; HOSTS]) };
}

pub(crate) fn now_ms() -> u64 {
    NOW_MS.with(|c| c.get())
}

/// Host `h`'s TCP timestamp clock: virtual milliseconds plus the host's offset.
pub(crate) fn ts_of(h: usize) -> u32 {
    (now_ms() as u32).wrapping_add(TS_OFF.with(|c| c.get())[h])
}

fn tsgen<const H: usize>() -> u32 {
    ts_of(H)
}

pub(crate) const TSGEN: [fn() -> u32; HOSTS] = [tsgen::<0>, tsgen::<1>, tsgen::<2>, tsgen::<3>];

// ------------------------------------------------------------------------------------------------
// Addresses.

pub(crate) fn host_ip(h: usize) -> Ipv4Address {
    if h == 0 {
        Ipv4Address::new(198, 18, 0, 2)
    } else {
        Ipv4Address::new(198, 19, h as u8, 2)
    }
}

pub(crate) fn host_gw(h: usize) -> Ipv4Address {
    if h == 0 {
        Ipv4Address::new(198, 18, 0, 1)
    } else {
        Ipv4Address::new(198, 19, h as u8, 1)
    }
}

pub(crate) fn host_mac(h: usize) -> EthernetAddress {
    EthernetAddress([0x02, 0x00, 0x00, 0x00, 0x10, h as u8])
}

pub(crate) fn node_of(ip: Ipv4Address) -> Option<usize> {
    let o = ip.octets();
    (o[0] == 198 && o[1] == 19 && o[3] == 2 && (1..HOSTS as u8).contains(&o[2]))
        .then_some(o[2] as usize)
}

// ------------------------------------------------------------------------------------------------
// smoltcp's ISN generator, inverted: the interface seed that makes the first TCP connection of a
// fresh interface (a connect or an accept) start at a chosen ISN. smoltcp draws one number for the
// IPv4 ident at creation, then one per ISN, from sPCG32 (src/rand.rs). Each run checks the SYNs it
// sees against the ISN asked for, so a change in smoltcp shows up as a failure, not as a silently
// weaker test.

const PCG_M: u64 = 0xbb2e_fcec_3c39_611d;
const PCG_A: u64 = 0x7590_ef39;

fn inv_mod_2_64(m: u64) -> u64 {
    let mut x = m;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(x)));
    }
    x
}

fn pcg_out(s: u64) -> u32 {
    let shift = 29 - (s >> 61);
    (s >> shift) as u32
}

/// A seed whose second draw is `isn` (and whose first draw, the ident, is not zero).
pub(crate) fn seed_for_isn(isn: u32, salt: u64) -> u64 {
    let inv = inv_mod_2_64(PCG_M);
    for k in 0..64u64 {
        let top = (isn >> 29) as u64; // choose s>>61 == top, so shift = 29 - top
        let shift = 29 - top;
        let low = (salt.wrapping_add(k).wrapping_mul(0x9e37_79b9)) & ((1u64 << shift) - 1);
        let mid = (isn as u64) << shift; // bits shift..shift+32
        let s2 = (top << 61) | (mid & ((1u64 << 61) - 1)) | low;
        if pcg_out(s2) != isn {
            continue;
        }
        let s1 = s2.wrapping_sub(PCG_A).wrapping_mul(inv);
        let seed = s1.wrapping_sub(PCG_A).wrapping_mul(inv);
        let n = pcg_out(s1);
        if (n ^ (n >> 16)) as u16 != 0 {
            return seed;
        }
    }
    panic!("no seed for ISN {isn:#x}");
}

/// A TCP connection as (local address, local port, remote address, remote port).
pub(crate) type Key4 = (Ipv4Address, u16, Ipv4Address, u16);
