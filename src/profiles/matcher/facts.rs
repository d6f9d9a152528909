//! A node's facts indexed for matching: grouped by class and key, each
//! value read as a number once.

use super::*;

/// A node's inventory, indexed for matching. Build it once per inventory and
/// match it against any number of profiles.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub(super) facts: Vec<Fact>,
    /// The value of each fact read as a number, when it is one.
    numbers: Vec<Option<Num>>,
    /// One entry per fact, `class hash << 96 | key hash << 64 | position`,
    /// sorted: facts grouped by class and key, in inventory order.
    index: Vec<u128>,
}

fn index_entry(class: u32, key: u32, fact: u64) -> u128 {
    (u128::from(class) << 96) | (u128::from(key) << 64) | u128::from(fact)
}

/// The fact position in an index entry.
pub(super) fn entry_fact(entry: u128) -> usize {
    (entry as u64) as usize
}

impl Facts {
    pub fn new(facts: Vec<Fact>) -> Self {
        let numbers = facts
            .iter()
            .map(|f| parse_number(&f.value).map(|(n, _)| n))
            .collect();
        let mut index: Vec<u128> = (0u64..)
            .zip(&facts)
            .map(|(i, f)| index_entry(text_hash(&f.class), text_hash(&f.key), i))
            .collect();
        index.sort_unstable();
        Facts {
            facts,
            numbers,
            index,
        }
    }

    /// The facts, in inventory order. Fact indices in [`Match`] and
    /// [`Explanation`] point into this slice.
    pub fn as_slice(&self) -> &[Fact] {
        &self.facts
    }

    pub fn len(&self) -> usize {
        self.facts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// Index entries whose class hashes to `class` (in key-hash order).
    pub(super) fn with_class(&self, class: u32) -> &[u128] {
        let lo = self
            .index
            .partition_point(|&e| e < index_entry(class, 0, 0));
        let hi = self.index.partition_point(|&e| (e >> 96) as u32 <= class);
        &self.index[lo..hi]
    }

    /// Index entries whose class and key hash to `class` and `key` (in
    /// inventory order).
    pub(super) fn with_class_key(&self, class: u32, key: u32) -> &[u128] {
        let lo = self
            .index
            .partition_point(|&e| e < index_entry(class, key, 0));
        let hi = self
            .index
            .partition_point(|&e| e >> 64 <= index_entry(class, key, 0) >> 64);
        &self.index[lo..hi]
    }

    /// The number in field `field` of fact `fact`, if it holds one.
    pub(super) fn number(&self, fact: usize, field: usize) -> Option<Num> {
        if field == 3 {
            self.numbers.get(fact).copied().flatten()
        } else {
            parse_number(self.facts[fact].field(field)).map(|(n, _)| n)
        }
    }
}

impl From<Vec<Fact>> for Facts {
    fn from(facts: Vec<Fact>) -> Self {
        Facts::new(facts)
    }
}

/// A quick, deterministic hash used to group facts by class and key. It
/// reads the length and the first and last 8 bytes only: texts that differ
/// elsewhere merely share a group. Matching always compares the texts.
pub(super) fn text_hash(s: &str) -> u32 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let bytes = s.as_bytes();
    let word = |part: &[u8]| {
        let mut w = [0u8; 8];
        w[..part.len()].copy_from_slice(part);
        u64::from_le_bytes(w)
    };
    let (first, last) = match bytes.len() {
        0..8 => (word(bytes), 0),
        n => (word(&bytes[..8]), word(&bytes[n - 8..])),
    };
    let h = ((bytes.len() as u64).wrapping_mul(K) ^ first).wrapping_mul(K);
    let h = (h.rotate_left(29) ^ last).wrapping_mul(K);
    (h >> 32) as u32
}
