//! A component that breaks the UDF contract on purpose, for testing that the host survives
//! whatever a guest answers (tests/hostile.rs). It is written against the WIT world
//! directly, without the Sluice SDK, as any tenant may write one: nothing binds it to the
//! SDK's habits. Each function's name says what it does wrong; `identity`, `keep_all` and
//! `sum` behave.
//!
//! Records are encoded by hand (see guest-sdk/abi): a tag byte, then lengths and integers
//! as bincode varints (integers zig-zagged).

// The state exports flatten to eight core-wasm arguments, past clippy's limit (the SDK's
// bindings allow it the same way).
#[allow(clippy::too_many_arguments)]
mod bindings {
    wit_bindgen::generate!({ path: "../../wit", world: "udf" });
}
use bindings::*;

use sluice::udf::diagnostics::report_panic;
use sluice::udf::types::Kind;

/// Every function, in export order: its index is its number in calls.
const FUNCTIONS: &[(&str, Kind)] = &[
    ("identity", Kind::Map),
    ("deep_1000", Kind::Map),
    ("deep_1001", Kind::Map),
    ("deep_10000", Kind::Map),
    ("deep_1000000", Kind::Map),
    ("deep_key_1000000", Kind::Map),
    ("map_short", Kind::Map),
    ("map_long", Kind::Map),
    ("fail_huge", Kind::Map),
    ("panic_huge", Kind::Map),
    ("huge_answer", Kind::Map),
    ("keep_all", Kind::Filter),
    ("mask_short", Kind::Filter),
    ("mask_long", Kind::Filter),
    ("flat_map_short", Kind::FlatMap),
    ("flat_map_long", Kind::FlatMap),
    ("flat_map_deep_1001", Kind::FlatMap),
    ("sum", Kind::Reduce),
    ("reduce_short", Kind::Reduce),
    ("reduce_long", Kind::Reduce),
    ("update_short", Kind::UpdateState),
    ("update_bad_cell", Kind::UpdateState),
    ("count_short", Kind::MapWithState),
    ("count_bad_cell", Kind::MapWithState),
];

const NULL: u8 = 0;
const INT: u8 = 2;
const BYTES: u8 = 5;
const LIST: u8 = 6;
const TUPLE: u8 = 7;

struct Hostile;

impl Guest for Hostile {
    fn functions() -> Vec<FunctionInfo> {
        FUNCTIONS
            .iter()
            .map(|&(name, kind)| FunctionInfo {
                name: name.into(),
                kind,
            })
            .collect()
    }

    fn map(function: u32, input: Batch) -> Result<Batch, Failure> {
        let records = records(&input);
        let n = records.len();
        Ok(match name(function) {
            "identity" => input,
            "deep_1000" => batch((0..n).map(|_| nested(1000))),
            "deep_1001" => batch((0..n).map(|_| nested(1001))),
            "deep_10000" => batch((0..n).map(|_| nested(10_000))),
            "deep_1000000" => batch((0..n).map(|_| nested(1_000_000))),
            "deep_key_1000000" => batch((0..n).map(|_| {
                let mut pair = vec![TUPLE, 2];
                pair.extend(nested(1_000_000));
                pair.extend(int(1));
                pair
            })),
            "map_short" => batch(records.iter().skip(1).map(|r| r.to_vec())),
            "map_long" => batch(records.iter().chain(&records).map(|r| r.to_vec())),
            "fail_huge" => {
                return Err(Failure {
                    message: "f".repeat(64 << 20),
                    record_index: Some(0),
                });
            }
            "panic_huge" => {
                report_panic(&"p".repeat(64 << 20), Some(0));
                std::process::abort()
            }
            "huge_answer" => batch((0..n).map(|_| {
                let len = 2 << 20;
                let mut bytes = vec![BYTES];
                varint(&mut bytes, len);
                bytes.resize(bytes.len() + len as usize, 0);
                bytes
            })),
            other => unreachable!("{other} is not a map function"),
        })
    }

    fn flat_map(function: u32, input: Batch) -> Result<Groups, Failure> {
        let n = input.ends.len() as u32;
        let (records, group_ends) = match name(function) {
            "flat_map_short" => (input, (1..n).collect()),
            "flat_map_long" => (input, (1..=n + 1).map(|end| end.min(n)).collect()),
            "flat_map_deep_1001" => (batch((0..n).map(|_| nested(1001))), (1..=n).collect()),
            other => unreachable!("{other} is not a flat-map function"),
        };
        Ok(Groups {
            records,
            group_ends,
        })
    }

    fn filter(function: u32, input: Batch) -> Result<Vec<u8>, Failure> {
        let owed = input.ends.len().div_ceil(8);
        let bytes = match name(function) {
            "keep_all" => owed,
            "mask_short" => owed.saturating_sub(1),
            "mask_long" => owed + 1,
            other => unreachable!("{other} is not a filter"),
        };
        Ok(vec![0xff; bytes])
    }

    fn map_partition(function: u32, _: Batch) -> Result<Batch, Failure> {
        unreachable!("{} is not a map-partition function", name(function))
    }

    fn chain(functions: Vec<u32>, input: Batch) -> Result<Batch, Failure> {
        functions.into_iter().try_fold(input, |current, function| {
            match FUNCTIONS[function as usize].1 {
                Kind::Map => Self::map(function, current),
                Kind::FlatMap => Self::flat_map(function, current).map(|groups| groups.records),
                _ => {
                    let keep = Self::filter(
                        function,
                        Batch {
                            data: current.data.clone(),
                            ends: current.ends.clone(),
                        },
                    )?;
                    Ok(batch(
                        records(&current)
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| {
                                keep.get(i / 8)
                                    .is_some_and(|byte| byte & (1 << (i % 8)) != 0)
                            })
                            .map(|(_, record)| record.to_vec()),
                    ))
                }
            }
        })
    }

    fn aggregate(function: u32, input: Groups) -> Result<Batch, Failure> {
        let sums: Vec<Vec<u8>> = groups(&input)
            .map(|group| int(group.iter().map(|record| read_int(record)).sum()))
            .collect();
        let n = sums.len();
        Ok(match name(function) {
            "sum" => batch(sums),
            "reduce_short" => batch(sums.into_iter().take(n.saturating_sub(1))),
            "reduce_long" => batch(sums.into_iter().cycle().take(n + 1)),
            other => unreachable!("{other} is not a reduce function"),
        })
    }

    fn update_state(function: u32, _: i64, input: Groups) -> Result<Batch, Failure> {
        let n = input.group_ends.len();
        Ok(match name(function) {
            "update_short" => batch((1..n).map(|_| vec![LIST, 1, INT, 2])),
            "update_bad_cell" => batch((0..n).map(|_| vec![LIST, 2, INT, 2, INT, 4])),
            other => unreachable!("{other} is not an update-state function"),
        })
    }

    fn map_with_state(function: u32, _: i64, input: Groups) -> Result<Groups, Failure> {
        let n = input.group_ends.len() as u32;
        let (keep, cell) = match name(function) {
            "count_short" => (n.saturating_sub(1), vec![LIST, 0]),
            "count_bad_cell" => (n, vec![NULL]),
            other => unreachable!("{other} is not a map-with-state function"),
        };
        Ok(Groups {
            records: batch((0..keep).map(|_| cell.clone())),
            group_ends: (1..=keep).collect(),
        })
    }
}

export!(Hostile);

fn name(function: u32) -> &'static str {
    FUNCTIONS[function as usize].0
}

fn records(batch: &Batch) -> Vec<&[u8]> {
    let mut start = 0;
    batch
        .ends
        .iter()
        .map(|&end| {
            let record = &batch.data[start..end as usize];
            start = end as usize;
            record
        })
        .collect()
}

fn groups(groups: &Groups) -> impl Iterator<Item = Vec<&[u8]>> {
    let records = records(&groups.records);
    let mut start = 0;
    groups
        .group_ends
        .iter()
        .map(|&end| {
            let group = records[start..end as usize].to_vec();
            start = end as usize;
            group
        })
        .collect::<Vec<_>>()
        .into_iter()
}

fn batch(records: impl IntoIterator<Item = Vec<u8>>) -> Batch {
    let mut batch = Batch {
        data: Vec::new(),
        ends: Vec::new(),
    };
    for record in records {
        batch.data.extend_from_slice(&record);
        batch.ends.push(batch.data.len() as u32);
    }
    batch
}

/// `depth` lists inside one another around an integer.
fn nested(depth: usize) -> Vec<u8> {
    let mut bytes = [LIST, 1].repeat(depth);
    bytes.extend(int(7));
    bytes
}

fn int(value: i64) -> Vec<u8> {
    let mut bytes = vec![INT];
    varint(&mut bytes, ((value << 1) ^ (value >> 63)) as u64);
    bytes
}

fn read_int(record: &[u8]) -> i64 {
    assert_eq!(record[0], INT, "sum adds integers");
    let raw = match record[1] {
        byte @ 0..=250 => u64::from(byte),
        251 => u64::from(u16::from_le_bytes([record[2], record[3]])),
        252 => u64::from(u32::from_le_bytes(record[2..6].try_into().unwrap())),
        _ => u64::from_le_bytes(record[2..10].try_into().unwrap()),
    };
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

fn varint(out: &mut Vec<u8>, value: u64) {
    if value <= 250 {
        out.push(value as u8);
    } else if value <= u64::from(u16::MAX) {
        out.push(251);
        out.extend_from_slice(&(value as u16).to_le_bytes());
    } else if value <= u64::from(u32::MAX) {
        out.push(252);
        out.extend_from_slice(&(value as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&value.to_le_bytes());
    }
}
