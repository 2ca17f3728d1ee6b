//! Which partition a sink's record goes to, chosen by Sluice rather than the client, so
//! that a batch written again after a crash puts every record where the first run did:
//! murmur2 of the key, as the Java client's default partitioner (so keys land where Java
//! producers put them), or the record's sequence number in its batch for records without
//! a key (librdkafka's default would pick a random partition for them).

/// The partition of a record with `key` (or, without one, sequence number `sequence` in
/// its batch) among `partitions`.
pub fn partition(key: Option<&[u8]>, sequence: u64, partitions: i32) -> i32 {
    let partitions = partitions.max(1);
    match key {
        Some(key) => ((murmur2(key) & 0x7fff_ffff) % partitions as u32) as i32,
        None => (sequence % partitions as u64) as i32,
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), seed 0x9747b28c.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("chunks of 4"));
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Java client's own test vectors (`UtilsTest.testMurmur2`).
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data) as i32,
                expected,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn keyless_records_go_round_by_sequence_and_keys_stay_put() {
        assert_eq!(
            (0..5)
                .map(|seq| partition(None, seq, 3))
                .collect::<Vec<_>>(),
            [0, 1, 2, 0, 1]
        );
        let first = partition(Some(b"word"), 0, 7);
        assert_eq!(partition(Some(b"word"), 99, 7), first);
        assert!((0..7).contains(&first));
    }
}
