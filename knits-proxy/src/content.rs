//! Deterministic object bytes: the body of every object the origin serves, as a pure function
//! of the object's name and the byte position.
//!
//! Any client can check any byte range of any object without storing it: byte `p` of object
//! `name` is byte `p % 8` (little-endian) of `mix(seed(name) + (p / 8) * GOLDEN)`, where `seed`
//! is 64-bit FNV-1a of the name and `mix` is the SplitMix64 finalizer. That is a handful of
//! integer operations per 8 bytes, so generating and verifying run at memory speed.

/// 64-bit FNV-1a offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// 64-bit FNV-1a prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// 2^64 / phi, the SplitMix64 increment.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// 64-bit FNV-1a hash of `bytes` (stable across processes and machines).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The SplitMix64 finalizer: a cheap bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 8 bytes of block `block` (bytes `8 * block .. 8 * block + 8`) of the object with `seed`.
fn block_bytes(seed: u64, block: u64) -> [u8; 8] {
    mix64(seed.wrapping_add(block.wrapping_mul(GOLDEN))).to_le_bytes()
}

/// Fills `buf` with bytes `offset .. offset + buf.len()` of the object named `name`.
pub fn fill(name: &str, offset: u64, buf: &mut [u8]) {
    let seed = fnv1a(name.as_bytes());
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let block = block_bytes(seed, pos / 8);
        let within = (pos % 8) as usize;
        let n = (8 - within).min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&block[within..within + n]);
        i += n;
        pos = pos.wrapping_add(n as u64);
    }
}

/// The first byte where a body differs from the object's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Position of the byte in the object (not in the checked slice).
    pub offset: u64,
    /// The byte the object has there.
    pub expected: u8,
    /// The byte that was received.
    pub found: u8,
}

impl core::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "object byte {} is {:#04x}, received {:#04x}",
            self.offset, self.expected, self.found
        )
    }
}

impl std::error::Error for Mismatch {}

/// Checks that `data` equals bytes `offset .. offset + data.len()` of object `name`.
pub fn verify(name: &str, offset: u64, data: &[u8]) -> Result<(), Mismatch> {
    let mut v = Verifier::new(name, offset);
    v.update(data)
}

/// Incremental verification of a body that arrives in pieces.
#[derive(Debug, Clone)]
pub struct Verifier {
    seed: u64,
    pos: u64,
}

impl Verifier {
    /// Starts checking object `name` at byte `offset`.
    pub fn new(name: &str, offset: u64) -> Self {
        Verifier {
            seed: fnv1a(name.as_bytes()),
            pos: offset,
        }
    }

    /// Object position of the next byte expected.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Checks the next piece; on a mismatch the position is left at the bad byte.
    pub fn update(&mut self, data: &[u8]) -> Result<(), Mismatch> {
        let mut i = 0;
        while i < data.len() {
            let block = block_bytes(self.seed, self.pos / 8);
            let within = (self.pos % 8) as usize;
            let n = (8 - within).min(data.len() - i);
            for k in 0..n {
                if data[i + k] != block[within + k] {
                    let offset = self.pos.wrapping_add(k as u64);
                    self.pos = offset;
                    return Err(Mismatch {
                        offset,
                        expected: block[within + k],
                        found: data[i + k],
                    });
                }
            }
            i += n;
            self.pos = self.pos.wrapping_add(n as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        fill(name, 0, &mut v);
        v
    }

    #[test]
    fn fill_is_deterministic_and_depends_on_the_name() {
        assert_eq!(object("a", 100), object("a", 100));
        assert_ne!(object("a", 100), object("b", 100));
        // Golden bytes: a change of the function breaks every client that verifies; it must show.
        let g = object("hello", 12);
        let mut want = [0u8; 16];
        want[..8].copy_from_slice(&mix64(fnv1a(b"hello")).to_le_bytes());
        want[8..].copy_from_slice(&mix64(fnv1a(b"hello").wrapping_add(GOLDEN)).to_le_bytes());
        assert_eq!(&g[..], &want[..12]);
    }

    #[test]
    fn any_range_equals_the_slice_of_the_whole() {
        let whole = object("obj/x", 200);
        for start in 0..40 {
            for len in [0, 1, 5, 8, 9, 17, 100] {
                let mut part = vec![0; len];
                fill("obj/x", start as u64, &mut part);
                assert_eq!(
                    &part[..],
                    &whole[start..start + len],
                    "start {start} len {len}"
                );
            }
        }
    }

    #[test]
    fn verify_accepts_good_and_locates_bad_bytes() {
        let whole = object("v", 1000);
        assert_eq!(verify("v", 0, &whole), Ok(()));
        assert_eq!(verify("v", 333, &whole[333..777]), Ok(()));
        let mut bad = whole[100..200].to_vec();
        bad[42] ^= 0x10;
        let err = verify("v", 100, &bad).unwrap_err();
        assert_eq!(err.offset, 142);
        assert_eq!(err.expected, whole[142]);
        assert_eq!(err.found, whole[142] ^ 0x10);
        assert!(verify("w", 0, &whole[..64]).is_err());
    }

    #[test]
    fn verifier_accepts_any_split() {
        let whole = object("split", 300);
        for cut in [1usize, 3, 7, 8, 13, 64] {
            let mut v = Verifier::new("split", 0);
            for piece in whole.chunks(cut) {
                v.update(piece).unwrap();
            }
            assert_eq!(v.position(), 300);
        }
    }

    #[test]
    fn far_offsets_do_not_overflow() {
        let mut b = [0u8; 16];
        fill("big", u64::MAX - 7, &mut b);
        assert_eq!(verify("big", u64::MAX - 7, &b), Ok(()));
    }
}
