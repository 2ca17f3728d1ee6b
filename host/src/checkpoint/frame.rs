//! Frames: how the write-ahead log and checkpoint files store records, each as its length,
//! its CRC-32 and its bytes, so that a torn or corrupt tail is found rather than decoded.

use std::io::{self, Write};

/// Bytes before a frame's payload: its length and its CRC-32, little-endian.
const HEADER: usize = 8;

/// The bytes a frame of a `payload` of `len` bytes takes.
pub fn framed_len(len: usize) -> u64 {
    (HEADER + len) as u64
}

/// Writes `payload` as one frame.
pub fn write(out: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::other("a frame holds at most 4 GiB"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&crc32fast::hash(payload).to_le_bytes())?;
    out.write_all(payload)
}

/// Where and why reading frames stopped before the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first frame that could not be read: everything before it is good.
    pub offset: usize,
    /// How many bytes from there on are skipped.
    pub skipped: usize,
    /// What was wrong with it.
    pub reason: &'static str,
    /// Whether the damage is confined to the last frame (what a write torn by a crash
    /// leaves): no good frame follows the bad one.
    pub last_frame: bool,
}

/// The payloads of the good frames at the start of `bytes`, and what stopped the reading
/// if it was not the end.
pub fn read(bytes: &[u8]) -> (Vec<&[u8]>, Option<Damage>) {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let damage = |reason, last_frame| Damage {
            offset,
            skipped: bytes.len() - offset,
            reason,
            last_frame,
        };
        let Some(header) = bytes.get(offset..offset + HEADER) else {
            return (
                frames,
                Some(damage("a frame header is cut short (torn write)", true)),
            );
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(offset + HEADER..offset + HEADER + len) else {
            return (
                frames,
                Some(damage("a frame is cut short (torn write)", true)),
            );
        };
        if crc32fast::hash(payload) != crc {
            // A damaged length makes the frame seem to end early: the damage is still
            // confined to it unless a good frame follows.
            let last_frame = !starts_with_good_frame(&bytes[offset + HEADER + len..]);
            return (
                frames,
                Some(damage(
                    "a frame's checksum does not match (corrupt)",
                    last_frame,
                )),
            );
        }
        frames.push(payload);
        offset += HEADER + len;
    }
    (frames, None)
}

/// Whether `bytes` starts with a whole frame whose checksum matches.
fn starts_with_good_frame(bytes: &[u8]) -> bool {
    let Some(header) = bytes.get(..HEADER) else {
        return false;
    };
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    bytes
        .get(HEADER..HEADER + len)
        .is_some_and(|payload| crc32fast::hash(payload) == crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        payloads.iter().for_each(|p| write(&mut out, p).unwrap());
        out
    }

    #[test]
    fn reads_back_what_was_written() {
        let bytes = framed(&[b"one", b"", b"three"]);
        assert_eq!(read(&bytes), (vec![&b"one"[..], b"", b"three"], None));
    }

    #[test]
    fn a_torn_tail_keeps_the_frames_before_it() {
        let bytes = framed(&[b"one", b"two"]);
        for cut in [bytes.len() - 1, bytes.len() - 4, 11 + 3] {
            let (frames, damage) = read(&bytes[..cut]);
            assert_eq!(frames, [b"one"]);
            let damage = damage.expect("the tail is damaged");
            assert_eq!((damage.offset, damage.skipped), (11, cut - 11));
            assert!(damage.last_frame);
        }
    }

    #[test]
    fn a_flipped_bit_stops_at_its_frame() {
        let mut bytes = framed(&[b"one", b"two", b"three"]);
        bytes[11 + 8] ^= 0x10;
        let (frames, damage) = read(&bytes);
        assert_eq!(frames, [b"one"]);
        let damage = damage.unwrap();
        assert!(damage.reason.contains("checksum") && !damage.last_frame);
        *bytes.last_mut().unwrap() ^= 0x10;
        bytes[11 + 8] ^= 0x10;
        let (_, damage) = read(&bytes);
        assert!(
            damage.unwrap().last_frame,
            "the damage is in the last frame only"
        );
        // The last frame's length made shorter: what is left of it is no frame.
        let mut bytes = framed(&[b"one", b"a longer frame"]);
        bytes[11] = 4;
        let (frames, damage) = read(&bytes);
        assert_eq!(frames, [b"one"]);
        assert!(damage.unwrap().last_frame);
    }
}
