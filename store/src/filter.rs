//! A blocked Bloom filter over a delta segment's code hashes, so a lookup
//! passes a delta that does not hold its code with one load from a small
//! bit array instead of a probe into the delta's index.

/// Bits per code: with two bits set per code in one 64-bit word, about 2%
/// of the codes a delta does not hold still probe its index.
const BITS_PER_CODE: usize = 16;

/// The filter: one word picked by the hash, two bits in it.
#[derive(Debug)]
pub(crate) struct Filter {
    words: Box<[u64]>,
    mask: usize,
}

impl Filter {
    /// A filter of the code hashes `hashes` (computed with the segment's seed).
    pub(crate) fn new(count: usize, hashes: impl Iterator<Item = u64>) -> Self {
        let words = (count.max(1) * BITS_PER_CODE / 64).next_power_of_two();
        let mut filter = Self {
            words: vec![0; words].into_boxed_slice(),
            mask: words - 1,
        };
        for hash in hashes {
            let (word, bits) = filter.place(hash);
            filter.words[word] |= bits;
        }
        filter
    }

    /// The word and bits of `hash`: bits 16 to 48 pick the word (the low 16
    /// bits are the index's tag), bits 48 to 60 the two bits.
    #[inline]
    fn place(&self, hash: u64) -> (usize, u64) {
        let word = (hash >> 16) as usize & self.mask;
        let bits = (1 << ((hash >> 48) & 63)) | (1 << ((hash >> 54) & 63));
        (word, bits)
    }

    /// False when the code of `hash` is certainly not in the segment.
    #[inline]
    pub(crate) fn may_hold(&self, hash: u64) -> bool {
        let (word, bits) = self.place(hash);
        self.words[word] & bits == bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_every_code_and_rejects_most_others() {
        let hash = |i: u64| crate::format::hash_code(&i.to_le_bytes(), 9);
        let filter = Filter::new(10_000, (0..10_000).map(hash));
        assert!((0..10_000).all(|i| filter.may_hold(hash(i))));
        let passed = (10_000..110_000)
            .filter(|&i| filter.may_hold(hash(i)))
            .count();
        assert!(passed < 5_000, "{passed} of 100,000 absent codes passed");
    }
}
