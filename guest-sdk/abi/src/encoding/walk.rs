//! Walking over one encoded value without recursion, checking its structure and its depth
//! on the way: how untrusted bytes are vetted before anything is built from them.

use super::{Error, tag, varint};

/// The deepest a value may nest: a container (list, tuple, map or struct) inside another,
/// 1,000 times over, is the most a record may hold; one level more is refused.
///
/// Every record is checked against it where it enters the host (a guest's answer, the
/// write-ahead log on replay, a state checkpoint, a table), by an iterative walk over its
/// bytes, before any [`Value`](crate::Value) is built. So no `Value` deeper than this
/// exists, and the code that does recurse once per level (`Value`'s derived `Clone`,
/// `PartialEq`, `Debug` and its `Drop`, JSON rendering, encoding) stays well inside a
/// 2 MiB worker-thread stack.
pub const MAX_DEPTH: usize = 1000;

/// Moves `input` past one value, checking that it is well formed (known tags, lengths
/// inside the input) and nested at most [`MAX_DEPTH`] levels.
#[inline]
pub(crate) fn skip(input: &mut &[u8]) -> Result<(), Error> {
    // A scalar (most fields are) needs no stack of open containers.
    let tag = read_tag(input)?;
    if skip_scalar(tag, input)? || skip_flat(tag, input)? {
        return Ok(());
    }
    skip_nested(tag, input)
}

/// Whether `record` is exactly one scalar, or one list or tuple of scalars, in the short
/// forms most records take (a string or bytes of at most 250 bytes, a list of at most 250
/// elements; integers of any width): the check of a guest's answer, record by record,
/// without [`skip`]'s `Result`s at every step. `false` says nothing: the record may still
/// be well formed in a longer form (or nested), and [`skip`] decides, with its error.
/// Whatever this accepts, [`skip`] accepts and finds to end where the record does.
#[inline]
pub(crate) fn is_whole_flat(record: &[u8]) -> bool {
    let end = match record.first() {
        Some(&(tag::TUPLE | tag::LIST)) => match record.get(1) {
            Some(&count) if count <= varint::SINGLE_BYTE_MAX => {
                let mut at = 2;
                for _ in 0..count {
                    match scalar_end(record, at) {
                        Some(end) => at = end,
                        None => return false,
                    }
                }
                at
            }
            _ => return false,
        },
        _ => match scalar_end(record, 0) {
            Some(end) => end,
            None => return false,
        },
    };
    end == record.len()
}

/// Where the scalar at byte `at` of `record` ends, for the forms [`is_whole_flat`]
/// takes; `None` for any other value, or one that runs past the record.
#[inline(always)]
fn scalar_end(record: &[u8], at: usize) -> Option<usize> {
    let end = match *record.get(at)? {
        tag::NULL => at + 1,
        tag::BOOL => at + 2,
        tag::FLOAT => at + 9,
        tag::INT => at + 1 + varint::width(*record.get(at + 1)?)?,
        tag::STRING | tag::BYTES => match *record.get(at + 1)? {
            len if len <= varint::SINGLE_BYTE_MAX => at + 2 + usize::from(len),
            _ => return None,
        },
        _ => return None,
    };
    (end <= record.len()).then_some(end)
}

/// Moves `input` past the rest of a list or tuple of tag `tag` whose elements are all
/// scalars (a `(key, count)` pair), without [`skip_nested`]'s stack of open containers;
/// `false`, with `input` where it was, if it is not one. An error is the one
/// `skip_nested` would give, at the same place.
#[inline]
fn skip_flat(tag: u8, input: &mut &[u8]) -> Result<bool, Error> {
    if tag != tag::TUPLE && tag != tag::LIST {
        return Ok(false);
    }
    let mut rest = *input;
    for _ in 0..varint::read_len(&mut rest)? {
        let element = read_tag(&mut rest)?;
        if !skip_scalar(element, &mut rest)? {
            return Ok(false);
        }
    }
    *input = rest;
    Ok(true)
}

/// Moves `input` past the rest of a scalar value of tag `tag`; `false` if it is not one.
#[inline]
fn skip_scalar(tag: u8, input: &mut &[u8]) -> Result<bool, Error> {
    match tag {
        tag::NULL => {}
        tag::BOOL => {
            varint::take(input, 1)?;
        }
        tag::INT => {
            varint::read_u64(input)?;
        }
        tag::FLOAT => {
            varint::take(input, 8)?;
        }
        tag::STRING | tag::BYTES => {
            let len = varint::read_len(input)?;
            varint::take(input, len)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// [`skip`] for a value of tag `first` that is not a scalar.
fn skip_nested(first: u8, input: &mut &[u8]) -> Result<(), Error> {
    let mut open = OpenContainers::default();
    let mut tag = first;
    loop {
        let (children, named) = match tag {
            scalar if skip_scalar(scalar, input)? => (0, false),
            container @ (tag::LIST | tag::TUPLE | tag::MAP | tag::STRUCT) => {
                if open.depth() == MAX_DEPTH {
                    return Err(too_deep());
                }
                // `read_len` bounds the count by the bytes left, so doubling cannot overflow.
                let count = varint::read_len(input)?;
                match container {
                    tag::MAP => (2 * count, false),
                    tag::STRUCT => (count, true),
                    _ => (count, false),
                }
            }
            other => return Err(unknown_tag(other)),
        };
        if children > 0 {
            open.push(Level {
                remaining: children,
                named,
            });
        }
        // Step to the next value to read, closing the containers it completes.
        loop {
            let Some(level) = open.last_mut() else {
                return Ok(());
            };
            if level.remaining == 0 {
                open.pop();
                continue;
            }
            level.remaining -= 1;
            if level.named {
                let len = varint::read_len(input)?;
                varint::take(input, len)?;
            }
            break;
        }
        tag = read_tag(input)?;
    }
}

#[inline]
pub(crate) fn read_tag(input: &mut &[u8]) -> Result<u8, Error> {
    let (&tag, rest) = input
        .split_first()
        .ok_or_else(|| Error::new("record ends where a value should start"))?;
    *input = rest;
    Ok(tag)
}

pub(crate) fn unknown_tag(tag: u8) -> Error {
    Error::new(format!(
        "byte {tag} is not a value tag: the record is not in Sluice's encoding"
    ))
}

pub(crate) fn too_deep() -> Error {
    Error::new(format!(
        "the record is nested deeper than {MAX_DEPTH} levels, the most a record may be \
         (lists, tuples, maps and structs inside one another)"
    ))
}

/// One open container: how many values it still holds, and whether each is preceded by
/// a field name (a struct's fields).
#[derive(Clone, Copy, Default)]
struct Level {
    remaining: usize,
    named: bool,
}

/// The containers the walk is inside, innermost last. The first few live on the stack,
/// so that skipping a typical record (a pair, a small struct) allocates nothing.
#[derive(Default)]
struct OpenContainers {
    inline: [Level; INLINE_LEVELS],
    deeper: Vec<Level>,
    depth: usize,
}

const INLINE_LEVELS: usize = 16;

impl OpenContainers {
    fn depth(&self) -> usize {
        self.depth
    }

    fn push(&mut self, level: Level) {
        match self.inline.get_mut(self.depth) {
            Some(slot) => *slot = level,
            None => self.deeper.push(level),
        }
        self.depth += 1;
    }

    fn last_mut(&mut self) -> Option<&mut Level> {
        let top = self.depth.checked_sub(1)?;
        match self.inline.get_mut(top) {
            Some(level) => Some(level),
            None => self.deeper.last_mut(),
        }
    }

    fn pop(&mut self) {
        self.depth -= 1;
        if self.depth >= INLINE_LEVELS {
            self.deeper.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `depth` lists inside one another around an integer.
    fn nested(depth: usize) -> Vec<u8> {
        let mut bytes = [tag::LIST, 1].repeat(depth);
        bytes.extend_from_slice(&[tag::INT, 2]);
        bytes
    }

    fn skipped(bytes: &[u8]) -> Result<usize, Error> {
        let mut input = bytes;
        skip(&mut input)?;
        Ok(bytes.len() - input.len())
    }

    #[test]
    fn accepts_the_limit_and_refuses_one_more() {
        let at_limit = nested(MAX_DEPTH);
        assert_eq!(skipped(&at_limit), Ok(at_limit.len()));
        let error = skipped(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert!(
            error.to_string().contains("deeper than 1000 levels"),
            "{error}"
        );
    }

    #[test]
    fn a_million_levels_are_refused_without_recursion() {
        let error = skipped(&nested(1_000_000)).unwrap_err();
        assert!(error.to_string().contains("deeper than 1000"), "{error}");
    }

    #[test]
    fn an_empty_container_counts_as_a_level() {
        let mut bytes = [tag::TUPLE, 1].repeat(MAX_DEPTH);
        bytes.extend_from_slice(&[tag::LIST, 0]);
        assert!(skipped(&bytes).is_err());
        bytes.drain(..2);
        assert_eq!(skipped(&bytes), Ok(bytes.len()));
    }

    #[test]
    fn walks_every_kind_of_container_to_its_end() {
        let value = crate::Value::Struct(vec![
            (
                "m".into(),
                crate::Value::Map(vec![(
                    crate::Value::String("k".into()),
                    crate::Value::List(vec![crate::Value::Null, crate::Value::Float(1.5)]),
                )]),
            ),
            (
                "t".into(),
                crate::Value::Tuple(vec![crate::Value::Bool(true), crate::Value::Bytes(vec![1])]),
            ),
        ]);
        let mut bytes = value.to_bytes();
        let len = bytes.len();
        bytes.extend_from_slice(&[tag::NULL]);
        assert_eq!(skipped(&bytes), Ok(len), "stops right after the value");
    }

    #[test]
    fn a_flat_container_is_skipped_as_the_general_walk_skips_it() {
        let general = |bytes: &[u8]| {
            let mut input = bytes;
            let tag = read_tag(&mut input)?;
            skip_nested(tag, &mut input).map(|()| bytes.len() - input.len())
        };
        let values = [
            crate::Value::Tuple(vec![
                crate::Value::String("word".into()),
                crate::Value::Int(-300),
            ]),
            crate::Value::List(vec![
                crate::Value::Null,
                crate::Value::Bool(true),
                crate::Value::Float(0.5),
                crate::Value::Bytes(vec![1, 2]),
            ]),
            crate::Value::Tuple(vec![]),
            crate::Value::Tuple(vec![
                crate::Value::Int(1),
                crate::Value::List(vec![crate::Value::Int(2)]),
            ]),
        ];
        for value in values {
            let whole = value.to_bytes();
            let mut bytes = whole.clone();
            bytes.push(tag::NULL);
            assert_eq!(skipped(&bytes), Ok(whole.len()), "{value:?}");
            for cut in 1..whole.len() {
                let cut = &whole[..cut];
                assert_eq!(skipped(cut), general(cut), "{value:?} cut to {cut:?}");
            }
            for at in 1..whole.len() {
                let mut bad = whole.clone();
                bad[at] = 42;
                assert_eq!(skipped(&bad), general(&bad), "{value:?} with {bad:?}");
            }
        }
    }

    #[test]
    fn a_record_taken_as_flat_is_one_the_general_walk_takes_whole() {
        use crate::Value;
        let flat = [
            Value::Tuple(vec![Value::String("word".into()), Value::Int(1)]),
            Value::Null,
            Value::Bool(true),
            Value::Int(-300),
            Value::Int(1 << 20),
            Value::Int(i64::MIN),
            Value::Float(0.5),
            Value::String("x".repeat(250)),
            Value::Bytes(vec![7; 3]),
            Value::List(vec![Value::Null, Value::Float(1.5), Value::Bytes(vec![])]),
            Value::Tuple(vec![]),
        ];
        let not_flat = [
            Value::String("x".repeat(251)),
            Value::Tuple(vec![Value::Int(1), Value::List(vec![Value::Int(2)])]),
            Value::List(vec![Value::Null; 251]),
            Value::Struct(vec![("a".into(), Value::Int(1))]),
        ];
        let whole = |bytes: &[u8]| skipped(bytes) == Ok(bytes.len());
        for (value, expected) in flat
            .iter()
            .map(|v| (v, true))
            .chain(not_flat.iter().map(|v| (v, false)))
        {
            let bytes = value.to_bytes();
            assert_eq!(is_whole_flat(&bytes), expected, "{value:?}");
            assert!(whole(&bytes), "{value:?}");
            for cut in 0..bytes.len() {
                assert!(!is_whole_flat(&bytes[..cut]), "{value:?} cut to {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(tag::NULL);
            assert!(!is_whole_flat(&longer), "{value:?} and a byte more");
            for at in 0..bytes.len().min(40) {
                for byte in 0..=u8::MAX {
                    let mut changed = bytes.clone();
                    changed[at] = byte;
                    if is_whole_flat(&changed) {
                        assert!(whole(&changed), "{value:?} with {changed:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn malformed_bytes_are_errors() {
        for bytes in [
            &[][..],
            &[tag::LIST, 2, tag::NULL],
            &[tag::STRING, 5, b'a'],
            &[42],
            &[tag::STRUCT, 1, 3, b'a'],
            &[tag::MAP, 1, tag::NULL],
        ] {
            assert!(skipped(bytes).is_err(), "{bytes:?}");
        }
    }
}
