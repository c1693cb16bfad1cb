//! Order-preserving sort keys for engine keys of any length.
//!
//! A DynamoDB binary sort key holds at most 1024 bytes; engine keys reach about 4 KiB (a
//! 2048-byte user key, escaped, in a history key). A key shorter than [`SORT_KEY_MAX`] is its
//! own sort key and its item holds its value. A longer key lives in the *bucket* item whose
//! sort key is its first [`SORT_KEY_MAX`] bytes; the bucket holds every such key (sorted)
//! with its value. Sort keys sort exactly as the keys they stand for: a short key is never a
//! prefix-equal of a bucket's sort key of the same length, and within a bucket keys sort by
//! their suffixes.

pub const SORT_KEY_MAX: usize = 1024;

/// The sort key of the item holding `key`, and whether that item is a bucket.
pub fn sort_key(key: &[u8]) -> (&[u8], bool) {
    if key.len() < SORT_KEY_MAX {
        (key, false)
    } else {
        (&key[..SORT_KEY_MAX], true)
    }
}

pub fn is_bucket(sort_key: &[u8]) -> bool {
    sort_key.len() >= SORT_KEY_MAX
}

/// The keys (as suffixes after the sort key) and values of a bucket, sorted by suffix.
pub type Bucket = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

pub fn encode_bucket(b: &Bucket) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in b {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

pub fn decode_bucket(mut b: &[u8]) -> Option<Bucket> {
    let mut out = Bucket::new();
    let take = |b: &mut &[u8]| -> Option<Vec<u8>> {
        let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let v = b.get(4..4 + n)?.to_vec();
        *b = &b[4 + n..];
        Some(v)
    };
    while !b.is_empty() {
        let k = take(&mut b)?;
        let v = take(&mut b)?;
        out.insert(k, v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_keys_preserve_order() {
        let mut keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![1],
            vec![1; SORT_KEY_MAX - 1],
            vec![1; SORT_KEY_MAX],
            [vec![1; SORT_KEY_MAX], vec![0]].concat(),
            [vec![1; SORT_KEY_MAX], vec![5; 900]].concat(),
            [vec![1; SORT_KEY_MAX - 1], vec![2]].concat(),
            vec![2],
        ];
        keys.sort();
        // (sort key, suffix) orders exactly like the key.
        let mapped: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .map(|k| {
                let (s, _) = sort_key(k);
                (s.to_vec(), k[s.len()..].to_vec())
            })
            .collect();
        let mut sorted = mapped.clone();
        sorted.sort();
        assert_eq!(mapped, sorted);
    }

    #[test]
    fn buckets_round_trip_and_reject_garbage() {
        let mut b = Bucket::new();
        b.insert(vec![], vec![1]);
        b.insert(vec![0, 1], vec![]);
        assert_eq!(decode_bucket(&encode_bucket(&b)), Some(b));
        assert_eq!(decode_bucket(&[0, 0, 0, 9, 1]), None);
    }
}
