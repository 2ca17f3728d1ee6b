//! bincode 2's variable-length integers: values up to 250 take one byte; larger ones a
//! marker byte (251, 252, 253) then 2, 4 or 8 little-endian bytes.

use super::Error;

pub(crate) const SINGLE_BYTE_MAX: u8 = 250;
const U16_MARKER: u8 = 251;
const U32_MARKER: u8 = 252;
const U64_MARKER: u8 = 253;

/// Appends `value` in its shortest form.
///
/// Inlined for the one-byte form (a string's length, a count): a WASM guest otherwise
/// calls it for every record, where a native build inlines it on its own.
#[inline(always)]
pub fn write_u64(out: &mut Vec<u8>, value: u64) {
    if value <= u64::from(SINGLE_BYTE_MAX) {
        out.push(value as u8);
    } else {
        write_wide(out, value);
    }
}

/// [`write_u64`] for a value longer than one byte.
#[inline(never)]
fn write_wide(out: &mut Vec<u8>, value: u64) {
    if value <= u64::from(u16::MAX) {
        out.push(U16_MARKER);
        out.extend_from_slice(&(value as u16).to_le_bytes());
    } else if value <= u64::from(u32::MAX) {
        out.push(U32_MARKER);
        out.extend_from_slice(&(value as u32).to_le_bytes());
    } else {
        out.push(U64_MARKER);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// Appends `value` zig-zagged, so that small negative numbers stay short.
pub fn write_i64(out: &mut Vec<u8>, value: i64) {
    write_u64(out, ((value << 1) ^ (value >> 63)) as u64);
}

/// Reads a varint from the front of `input`, advancing it (inlined for the one-byte
/// form, as [`write_u64`] is).
#[inline(always)]
pub fn read_u64(input: &mut &[u8]) -> Result<u64, Error> {
    match input.first() {
        Some(&byte) if byte <= SINGLE_BYTE_MAX => {
            *input = &input[1..];
            Ok(u64::from(byte))
        }
        _ => read_wide(input),
    }
}

/// [`read_u64`] for anything but the one-byte form.
#[inline(never)]
fn read_wide(input: &mut &[u8]) -> Result<u64, Error> {
    let width = match input.first() {
        Some(&U16_MARKER) => 2,
        Some(&U32_MARKER) => 4,
        Some(&U64_MARKER) => 8,
        Some(&byte) => return Err(bad_marker(byte)),
        None => return Err(ends_inside()),
    };
    let Some(bytes) = input.get(1..1 + width) else {
        return Err(ends_inside());
    };
    let mut le = [0u8; 8];
    le[..width].copy_from_slice(bytes);
    *input = &input[1 + width..];
    Ok(u64::from_le_bytes(le))
}

#[cold]
fn bad_marker(byte: u8) -> Error {
    Error::new(format!("invalid varint marker byte {byte}"))
}

#[cold]
fn ends_inside() -> Error {
    Error::new("record ends inside a length or integer")
}

/// The bytes a varint whose first byte is `first` takes; `None` if `first` starts none.
#[inline(always)]
pub(crate) fn width(first: u8) -> Option<usize> {
    match first {
        0..=SINGLE_BYTE_MAX => Some(1),
        U16_MARKER => Some(3),
        U32_MARKER => Some(5),
        U64_MARKER => Some(9),
        _ => None,
    }
}

/// Reads a zig-zagged varint from the front of `input`.
#[inline]
pub fn read_i64(input: &mut &[u8]) -> Result<i64, Error> {
    let raw = read_u64(input)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// Reads a length and checks it against what is left, so a corrupt length fails here
/// rather than as a huge allocation.
#[inline(always)]
pub fn read_len(input: &mut &[u8]) -> Result<usize, Error> {
    let len = read_u64(input)?;
    if len > input.len() as u64 {
        return Err(too_long(len, input.len()));
    }
    Ok(len as usize)
}

#[cold]
fn too_long(len: u64, left: usize) -> Error {
    Error::new(format!(
        "length {len} is larger than the {left} bytes left in the record"
    ))
}

#[cold]
fn ends_early(len: usize, left: usize) -> Error {
    Error::new(format!(
        "record ends early: {len} bytes expected, {left} left"
    ))
}

/// Splits `len` bytes off the front of `input`.
#[inline]
pub fn take<'de>(input: &mut &'de [u8], len: usize) -> Result<&'de [u8], Error> {
    if input.len() < len {
        return Err(ends_early(len, input.len()));
    }
    let (head, rest) = input.split_at(len);
    *input = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_width_and_sign() {
        for value in [
            0i64,
            1,
            -1,
            125,
            -126,
            127,
            300,
            -300,
            70_000,
            i64::MAX,
            i64::MIN,
        ] {
            let mut out = Vec::new();
            write_i64(&mut out, value);
            let mut input = out.as_slice();
            assert_eq!(read_i64(&mut input).unwrap(), value);
            assert!(input.is_empty());
        }
        for value in [
            0u64,
            250,
            251,
            65_535,
            65_536,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, value);
            assert_eq!(read_u64(&mut out.as_slice()).unwrap(), value);
        }
    }

    #[test]
    fn rejects_a_length_past_the_end() {
        let mut out = Vec::new();
        write_u64(&mut out, 1_000);
        out.push(0);
        assert!(read_len(&mut out.as_slice()).is_err());
    }
}
