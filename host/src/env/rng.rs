//! A tiny seeded PRNG (SplitMix64) for the built-in suites' generators.
//!
//! The suites need a few thousand draws to build a catalog or a room, the
//! same on every platform and every release. SplitMix64 is 10 lines, has no
//! dependencies and passes BigCrush for this kind of use.

/// SplitMix64: a 64-bit state advanced by a constant and finalized by a mix.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// A generator seeded from a label and numbers, e.g. `("shop/train", 17)`.
    pub(crate) fn from_parts(label: &str, parts: &[u64]) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(label.as_bytes());
        for part in parts {
            hasher.update(&part.to_le_bytes());
        }
        let bytes = hasher.finalize();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&bytes.as_bytes()[..8]);
        SplitMix64::new(u64::from_le_bytes(seed))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0, "below(0)");
        // Multiply-shift: unbiased enough for n far below 2^32.
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Uniform in `[lo, hi]`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below((hi - lo + 1) as usize) as u64
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Fisher-Yates, in place.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SplitMix64::from_parts("x", &[1, 2]);
        let mut b = SplitMix64::from_parts("x", &[1, 2]);
        let mut c = SplitMix64::from_parts("x", &[1, 3]);
        let sa: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let sb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let sc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(sa, sb);
        assert_ne!(sa, sc);
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [false; 5];
        for _ in 0..200 {
            let v = rng.below(5);
            seen[v] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
