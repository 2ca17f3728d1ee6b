//! Stateful user functions: the state a function sees for one key, and the adapters that
//! run updateStateByKey and mapWithState functions over the groups the host sends.
//!
//! The host keeps every key's state; a call carries, per key, the key's *state cell*: a
//! list of no element (no state) or one (the state). The adapters turn cells into
//! `Option<S>` and [`State<S>`] and back, so user functions never see them.

use std::cell::Cell;

use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Groups};
use crate::function::{Failure, Progress, decode};

thread_local! {
    static BATCH_TIME: Cell<Option<i64>> = const { Cell::new(None) };
}

/// The time of the batch a state function is running for, in milliseconds since the
/// epoch; `None` outside a state function. Spark passes it as the `Time` argument of its
/// updateStateByKey and mapWithState functions; here it stays out of the common
/// signatures.
pub fn batch_time_ms() -> Option<i64> {
    BATCH_TIME.with(Cell::get)
}

/// Sets the batch time for as long as it lives.
struct BatchTime;

impl BatchTime {
    fn set(time_ms: i64) -> Self {
        BATCH_TIME.with(|time| time.set(Some(time_ms)));
        BatchTime
    }
}

impl Drop for BatchTime {
    fn drop(&mut self) {
        BATCH_TIME.with(|time| time.set(None));
    }
}

/// One key's state, as a mapWithState function sees it (Spark's `State[S]`).
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    timing_out: bool,
    removed: bool,
}

impl<S> State<S> {
    /// Whether the key has a state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The key's state, if it has one.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the key's state.
    ///
    /// # Panics
    /// As in Spark, when the state was removed in this call or is timing out (a timing-out
    /// key is removed after its last call whatever the function does).
    pub fn update(&mut self, value: S) {
        assert!(
            !self.removed,
            "cannot update the state after it has been removed"
        );
        assert!(
            !self.timing_out,
            "cannot update the state that is timing out"
        );
        self.value = Some(value);
    }

    /// Removes the key's state.
    ///
    /// # Panics
    /// As in Spark, when it was already removed in this call or is timing out.
    pub fn remove(&mut self) {
        assert!(
            !self.removed,
            "cannot remove the state that has already been removed"
        );
        assert!(
            !self.timing_out,
            "cannot remove the state that is timing out"
        );
        self.removed = true;
        self.value = None;
    }

    /// Whether this is the key's last call: it has been idle for longer than the
    /// operator's timeout, and the call brings no value.
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }
}

fn state_cell<S>(cell: Vec<S>, index: usize) -> Result<Option<S>, Failure> {
    if cell.len() > 1 {
        return Err(Failure::at(
            index,
            format!(
                "record {index} is a state cell of {} elements; a cell holds at most one",
                cell.len()
            ),
        ));
    }
    Ok(cell.into_iter().next())
}

/// Runs an updateStateByKey function on every group `[state cell, new values...]`, each
/// one key's: the result is one state cell per group (empty when the function drops the
/// key).
pub fn update_state<'a, V, S>(
    input: &'a Groups,
    time_ms: i64,
    mut f: impl FnMut(Vec<V>, Option<S>) -> Option<S>,
) -> Result<Batch, Failure>
where
    V: Deserialize<'a>,
    S: Deserialize<'a> + Serialize,
{
    let _time = BatchTime::set(time_ms);
    let progress = Progress::start();
    let records = input.records();
    let mut output = Batch::with_capacity(input.len(), records.data().len() / input.len().max(1));
    for group in 0..input.len() {
        let mut indices = input.group(group);
        let first = indices
            .next()
            .ok_or_else(|| Failure::new(format!("group {group} has no state cell")))?;
        let old = state_cell(decode(&progress, first, records.get(first))?, first)?;
        let values = indices
            .map(|index| decode(&progress, index, records.get(index)))
            .collect::<Result<Vec<V>, _>>()?;
        let new = f(values, old);
        output
            .push(new.as_slice())
            .map_err(|error| Failure::unencodable(first, error))?;
    }
    Ok(output)
}

/// Runs a mapWithState function on every group `[key, (state cell, timing out), values...]`,
/// each one key's: once per value in order, each call seeing the state the previous one
/// left (as Spark re-wraps the key's state for every record); a timing-out key gets one
/// call without a value and loses its state. Result group `j` is `[new state cell,
/// emitted records...]`.
pub fn map_with_state<'a, K, V, S, M>(
    input: &'a Groups,
    time_ms: i64,
    mut f: impl FnMut(K, Option<V>, &mut State<S>) -> Option<M>,
) -> Result<Groups, Failure>
where
    K: Deserialize<'a>,
    V: Deserialize<'a>,
    S: Deserialize<'a> + Serialize,
    M: Serialize,
{
    let _time = BatchTime::set(time_ms);
    let progress = Progress::start();
    let records = input.records();
    let mut output = Batch::with_capacity(input.len() * 2, records.data().len());
    let mut group_ends = Vec::with_capacity(input.len());
    for group in 0..input.len() {
        let mut indices = input.group(group);
        let (Some(key_at), Some(header_at)) = (indices.next(), indices.next()) else {
            return Err(Failure::new(format!(
                "group {group} lacks its key or its state header"
            )));
        };
        let (cell, timing_out): (Vec<S>, bool) =
            decode(&progress, header_at, records.get(header_at))?;
        let mut current = state_cell(cell, header_at)?;
        let mut emitted = Vec::new();
        let mut call = |value: Option<V>, current: &mut Option<S>| -> Result<(), Failure> {
            let key = decode(&progress, key_at, records.get(key_at))?;
            let mut state = State {
                value: current.take(),
                timing_out,
                removed: false,
            };
            if let Some(record) = f(key, value, &mut state) {
                emitted.push(record);
            }
            *current = if timing_out { None } else { state.value };
            Ok(())
        };
        if timing_out {
            call(None, &mut current)?;
        }
        for index in indices {
            call(
                Some(decode(&progress, index, records.get(index))?),
                &mut current,
            )?;
        }
        output
            .push(current.as_slice())
            .map_err(|error| Failure::unencodable(key_at, error))?;
        for record in &emitted {
            output
                .push(record)
                .map_err(|error| Failure::unencodable(key_at, error))?;
        }
        group_ends.push(output.len() as u32);
    }
    Ok(Groups::from_parts(output, group_ends).expect("group ends are built in order"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Value;

    fn groups(groups: &[&[Value]]) -> Groups {
        let mut records = Batch::new();
        let mut ends = Vec::new();
        for group in groups {
            group.iter().for_each(|value| records.push(value).unwrap());
            ends.push(records.len() as u32);
        }
        Groups::from_parts(records, ends).unwrap()
    }

    fn decoded(batch: &Batch) -> Vec<Value> {
        batch.iter().map(|r| Value::decode(r).unwrap()).collect()
    }

    fn cell(state: Option<i64>) -> Value {
        Value::List(state.map(Value::Int).into_iter().collect())
    }

    #[test]
    fn update_state_sees_values_old_state_and_batch_time() {
        let input = groups(&[
            &[cell(Some(5)), Value::Int(1), Value::Int(2)],
            &[cell(None)],
        ]);
        let output = update_state(&input, 7000, |values: Vec<i64>, old: Option<i64>| {
            let sum: i64 = values.iter().sum();
            (sum > 0).then(|| old.unwrap_or(0) + sum + batch_time_ms().unwrap())
        })
        .unwrap();
        assert_eq!(decoded(&output), [cell(Some(7008)), cell(None)]);
        assert_eq!(
            batch_time_ms(),
            None,
            "the time is only set during the call"
        );
    }

    #[test]
    fn map_with_state_threads_the_state_through_a_keys_records() {
        let header = |state: Option<i64>, timing_out: bool| {
            Value::Tuple(vec![cell(state), Value::Bool(timing_out)])
        };
        let key = Value::String("a".into());
        let input = groups(&[
            &[
                key.clone(),
                header(Some(1), false),
                Value::Int(1),
                Value::Int(1),
            ],
            &[key.clone(), header(Some(4), true)],
        ]);
        let output = map_with_state(
            &input,
            0,
            |key: String, value: Option<i64>, state: &mut State<i64>| {
                if state.is_timing_out() {
                    return Some(format!("{key} timed out at {}", state.get().unwrap()));
                }
                let count = state.get().unwrap_or(&0) + value.unwrap();
                state.update(count);
                Some(format!("{key}={count}"))
            },
        )
        .unwrap();
        assert_eq!(output.group(0), 0..3);
        assert_eq!(
            decoded(output.records()),
            [
                cell(Some(3)),
                Value::String("a=2".into()),
                Value::String("a=3".into()),
                cell(None),
                Value::String("a timed out at 4".into()),
            ]
        );
    }
}
