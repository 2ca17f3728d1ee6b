//! Records that are not pairs reaching a keyed step, found at check time where the
//! records are known: a `queue` source's, through steps that pass records on unchanged.
//! Elsewhere (a UDF made them, a live source) it stays a run-time error.

use sluice_abi::Value;

use super::config::{SourceConfig, SourceKind, StepConfig, StreamConfig};

/// The first stream fed by a `queue` source whose records include one that is not a pair
/// where a keyed step reads it: (stream index, step index, the record).
pub fn non_pair_from_queue<'a>(
    sources: &'a [SourceConfig],
    streams: &[StreamConfig],
) -> Option<(usize, usize, &'a Value)> {
    streams.iter().enumerate().find_map(|(index, stream)| {
        let batches = sources.iter().find_map(|source| match &source.kind {
            SourceKind::Queue { batches } if source.name == stream.from => Some(batches),
            _ => None,
        })?;
        first_non_pair(batches.iter().flatten(), &stream.steps)
            .map(|(step, record)| (index, step, record))
    })
}

/// The first record of `records` that is not a pair and reaches a keyed step of `steps`,
/// with that step's index.
pub fn first_non_pair<'a>(
    records: impl IntoIterator<Item = &'a Value> + Clone,
    steps: &[StepConfig],
) -> Option<(usize, &'a Value)> {
    for (index, step) in steps.iter().enumerate() {
        if is_keyed(step) {
            return records
                .into_iter()
                .find(|record| !is_pair(record))
                .map(|record| (index, record));
        }
        if !passes_records_on(step) {
            return None;
        }
    }
    None
}

/// A key-value record: a 2-tuple, or a 2-element list (as the engine reads pairs).
pub fn is_pair(record: &Value) -> bool {
    matches!(record, Value::Tuple(items) | Value::List(items) if items.len() == 2)
}

/// Steps that read their input as key-value pairs.
fn is_keyed(step: &StepConfig) -> bool {
    matches!(
        step,
        StepConfig::ReduceByKey(_)
            | StepConfig::GroupByKey
            | StepConfig::CombineByKey { .. }
            | StepConfig::MapValues(_)
            | StepConfig::FlatMapValues(_)
            | StepConfig::Cogroup(_)
            | StepConfig::Join(..)
            | StepConfig::SubtractByKey(_)
            | StepConfig::ReduceByKeyAndWindow { .. }
            | StepConfig::GroupByKeyAndWindow(_)
            | StepConfig::UpdateStateByKey { .. }
            | StepConfig::MapWithState { .. }
    )
}

/// Steps whose output records are some of their input records, unchanged.
fn passes_records_on(step: &StepConfig) -> bool {
    matches!(
        step,
        StepConfig::Filter(_)
            | StepConfig::Repartition(_)
            | StepConfig::Distinct
            | StepConfig::Window(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Value> {
        vec![
            Value::Tuple(vec![Value::String("a".into()), Value::Int(1)]),
            Value::String("b".into()),
        ]
    }

    #[test]
    fn a_non_pair_is_found_at_the_first_keyed_step() {
        let records = records();
        let steps = [
            StepConfig::Repartition(2),
            StepConfig::Distinct,
            StepConfig::GroupByKey,
        ];
        assert_eq!(first_non_pair(&records, &steps), Some((2, &records[1])));
    }

    #[test]
    fn records_changed_by_a_step_are_not_judged() {
        let records = records();
        assert_eq!(
            first_non_pair(&records, &[StepConfig::Glom, StepConfig::GroupByKey]),
            None
        );
        assert_eq!(
            first_non_pair(
                &records,
                &[StepConfig::CountByValue, StepConfig::GroupByKey]
            ),
            None
        );
        assert_eq!(
            first_non_pair(&records[..1], &[StepConfig::GroupByKey]),
            None
        );
    }

    #[test]
    fn pairs_are_2_tuples_and_2_lists() {
        assert!(is_pair(&Value::List(vec![Value::Int(1), Value::Int(2)])));
        assert!(!is_pair(&Value::List(vec![Value::Int(1)])));
        assert!(!is_pair(&Value::Int(1)));
    }
}
