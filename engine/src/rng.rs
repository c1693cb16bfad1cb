//! A small deterministic generator for varied but repeatable input: tests, benchmarks and
//! load generators draw the same sequence from the same seed on every run. Not for anything
//! that must be unpredictable.

/// xorshift64 (shifts 13, 7, 17). The seed must not be 0, which it would never leave.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// The next number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn the_sequence_depends_on_the_seed_alone() {
        let mut a = XorShift(42);
        let mut b = XorShift(42);
        let first: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        assert!(first.iter().all(|&x| x == b.next_u64()));
        assert_eq!(first[0], 45_454_805_674);
        assert!((0..100).all(|_| a.below(7) < 7));
        assert_eq!(a.below(0), 0);
    }
}
