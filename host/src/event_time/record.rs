//! Reading fields of records and folding values, for the built-in event-time steps.

use std::cmp::Ordering;

use anyhow::{Result, bail};
use sluice_abi::Value;
use sluice_abi::encoding::field_value;

/// Field `name` of `record` (a struct or a map with string keys), or an error saying so.
pub(crate) fn field<'a>(record: &'a Value, name: &str, step: &str) -> Result<&'a Value> {
    match record.field(name) {
        Some(value) => Ok(value),
        None => bail!(
            "{step}: the record {} has no field `{name}` (event-time steps read structs or maps by field name)",
            record.to_json()
        ),
    }
}

/// The encoding of field `name` of the encoded `record`, found without decoding it, or
/// an error saying it has none.
pub(crate) fn field_bytes<'a>(record: &'a [u8], name: &str, step: &str) -> Result<&'a [u8]> {
    match field_value(record, name) {
        Some(value) => Ok(value),
        None => {
            let record = Value::decode(record)?;
            field(&record, name, step)?;
            bail!(
                "{step}: the field `{name}` of {} is malformed",
                record.to_json()
            )
        }
    }
}

/// A struct of `fields`.
pub(crate) fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Struct(
        fields
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
    )
}

/// A window as the struct `{start, end}` (ms).
pub(crate) fn window((start, end): (i64, i64)) -> Value {
    record(vec![("start", Value::Int(start)), ("end", Value::Int(end))])
}

/// `record` with `name` set to `value` (replaced if it has it, else added last).
pub(crate) fn with_field(record: Value, name: &str, value: Value) -> Value {
    match record {
        Value::Struct(mut fields) => {
            match fields.iter_mut().find(|(field, _)| field == name) {
                Some((_, slot)) => *slot = value,
                None => fields.push((name.to_owned(), value)),
            }
            Value::Struct(fields)
        }
        // A struct returned by a UDF arrives as a map with string keys.
        Value::Map(entries)
            if entries
                .iter()
                .all(|(key, _)| matches!(key, Value::String(_))) =>
        {
            let fields = entries
                .into_iter()
                .filter_map(|(key, field)| match key {
                    Value::String(key) => Some((key, field)),
                    _ => None,
                })
                .collect();
            with_field(Value::Struct(fields), name, value)
        }
        other => Value::Struct(vec![("value".to_owned(), other), (name.to_owned(), value)]),
    }
}

/// Orders numbers by value (integers and floats together), then strings, then anything
/// else by its canonical encoding: how `min`, `max` and `order_by` compare.
pub(crate) fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => a.cmp(b),
        (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
            number(a).total_cmp(&number(b))
        }
        (Value::String(a), Value::String(b)) => a.cmp(b),
        _ => a.to_bytes().cmp(&b.to_bytes()),
    }
}

fn number(value: &Value) -> f64 {
    match value {
        Value::Int(value) => *value as f64,
        Value::Float(value) => *value,
        _ => f64::NAN,
    }
}

/// A built-in aggregate's running value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Acc {
    Count(i64),
    Sum(Value),
    Min(Value),
    Max(Value),
    Avg(f64, i64),
    Last(Value),
    /// A reduce or fold UDF's: the accumulator (a fold's starts as its zero), then the
    /// values of the batch still to fold into it, in arrival order. The batch ends by
    /// folding each one to a single value with one call of the UDF for all groups.
    Udf(Vec<Value>),
}

impl Acc {
    /// Folds one more value in (`None` for `count`, which counts rows). SQL nulls are
    /// skipped by every aggregate but `last`.
    pub(crate) fn add(&mut self, value: Option<&Value>, step: &str) -> Result<()> {
        if let Acc::Count(count) = self {
            // Every row counts, nulls too.
            *count += 1;
            return Ok(());
        }
        let value = value.unwrap_or(&Value::Null);
        if let Acc::Udf(pending) = self {
            // The function decides what a null means.
            pending.push(value.clone());
            return Ok(());
        }
        if matches!(value, Value::Null) && !matches!(self, Acc::Count(_) | Acc::Last(_)) {
            return Ok(());
        }
        self.merge(&Self::of(self, value.clone()), step)
    }

    /// The accumulator of one value, of the same aggregate as `like`.
    fn of(like: &Acc, value: Value) -> Acc {
        match like {
            Acc::Count(_) => Acc::Count(1),
            Acc::Sum(_) => Acc::Sum(value),
            Acc::Min(_) => Acc::Min(value),
            Acc::Max(_) => Acc::Max(value),
            Acc::Avg(..) => Acc::Avg(number(&value), 1),
            Acc::Last(_) => Acc::Last(value),
            Acc::Udf(_) => Acc::Udf(vec![value]),
        }
    }

    /// Merges another accumulator of the same aggregate (`other` came later).
    pub(crate) fn merge(&mut self, other: &Acc, step: &str) -> Result<()> {
        let pick = |mine: &mut Value, theirs: &Value, keep: Ordering| {
            if matches!(mine, Value::Null) || compare(theirs, mine) == keep {
                *mine = theirs.clone();
            }
        };
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Sum(a), Acc::Sum(b)) => {
                *a = match (&*a, b) {
                    (Value::Null, b @ (Value::Null | Value::Int(_) | Value::Float(_))) => b.clone(),
                    (a @ (Value::Int(_) | Value::Float(_)), Value::Null) => a.clone(),
                    (Value::Int(x), Value::Int(y)) => Value::Int(x.wrapping_add(*y)),
                    (
                        x @ (Value::Int(_) | Value::Float(_)),
                        y @ (Value::Int(_) | Value::Float(_)),
                    ) => Value::Float(number(x) + number(y)),
                    (x, y) => bail!(
                        "{step}: cannot sum {} and {}: sum takes numbers",
                        x.to_json(),
                        y.to_json()
                    ),
                }
            }
            (Acc::Min(a), Acc::Min(b)) if !matches!(b, Value::Null) => pick(a, b, Ordering::Less),
            (Acc::Max(a), Acc::Max(b)) if !matches!(b, Value::Null) => {
                pick(a, b, Ordering::Greater)
            }
            (Acc::Min(_) | Acc::Max(_), _) => {}
            (Acc::Avg(sum, n), Acc::Avg(other_sum, other_n)) => {
                *sum += other_sum;
                *n += other_n;
            }
            (Acc::Last(a), Acc::Last(b)) => *a = b.clone(),
            // Only reduce functions merge (sessions refuse folds), and a reduction of the
            // concatenation is the reduction of the parts.
            (Acc::Udf(a), Acc::Udf(b)) => a.extend(b.iter().cloned()),
            (mine, theirs) => bail!("{step}: cannot merge {mine:?} with {theirs:?}"),
        }
        Ok(())
    }

    /// The aggregate's value as output.
    pub(crate) fn value(&self) -> Value {
        match self {
            Acc::Count(count) => Value::Int(*count),
            Acc::Sum(value) | Acc::Min(value) | Acc::Max(value) | Acc::Last(value) => value.clone(),
            Acc::Avg(_, 0) => Value::Null,
            Acc::Avg(sum, n) => Value::Float(sum / *n as f64),
            Acc::Udf(folded) => folded.first().cloned().unwrap_or(Value::Null),
        }
    }

    /// The values a UDF accumulator still has to fold (its accumulator first), if it
    /// has more than the one value it folds to.
    pub(crate) fn unfolded(&self) -> Option<&[Value]> {
        match self {
            Acc::Udf(pending) if pending.len() > 1 => Some(pending),
            _ => None,
        }
    }

    /// The accumulator as a value, for checkpoints.
    pub(crate) fn save(&self) -> Value {
        let (tag, value) = match self {
            Acc::Count(count) => (0, Value::Int(*count)),
            Acc::Sum(value) => (1, value.clone()),
            Acc::Min(value) => (2, value.clone()),
            Acc::Max(value) => (3, value.clone()),
            Acc::Avg(sum, n) => (4, Value::Tuple(vec![Value::Float(*sum), Value::Int(*n)])),
            Acc::Last(value) => (5, value.clone()),
            Acc::Udf(pending) => (6, Value::List(pending.clone())),
        };
        Value::Tuple(vec![Value::Int(tag), value])
    }

    /// An accumulator saved by [`Acc::save`].
    pub(crate) fn restore(saved: &Value) -> Result<Acc> {
        let Value::Tuple(parts) = saved else {
            bail!("a checkpointed aggregate is not a tuple")
        };
        Ok(match (parts.first(), parts.get(1)) {
            (Some(Value::Int(0)), Some(Value::Int(count))) => Acc::Count(*count),
            (Some(Value::Int(1)), Some(value)) => Acc::Sum(value.clone()),
            (Some(Value::Int(2)), Some(value)) => Acc::Min(value.clone()),
            (Some(Value::Int(3)), Some(value)) => Acc::Max(value.clone()),
            (Some(Value::Int(4)), Some(Value::Tuple(avg))) => match avg.as_slice() {
                [Value::Float(sum), Value::Int(n)] => Acc::Avg(*sum, *n),
                _ => bail!("a checkpointed average is malformed"),
            },
            (Some(Value::Int(5)), Some(value)) => Acc::Last(value.clone()),
            (Some(Value::Int(6)), Some(Value::List(pending))) => Acc::Udf(pending.clone()),
            _ => bail!("a checkpointed aggregate is malformed"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(mut acc: Acc, values: &[Value]) -> Value {
        values
            .iter()
            .for_each(|value| acc.add(Some(value), "t").unwrap());
        acc.value()
    }

    #[test]
    fn aggregates_fold_as_sql_does() {
        let values = [Value::Int(3), Value::Null, Value::Int(1), Value::Float(2.5)];
        assert_eq!(fold(Acc::Sum(Value::Null), &values), Value::Float(6.5));
        assert_eq!(fold(Acc::Sum(Value::Null), &values[..3]), Value::Int(4));
        assert_eq!(fold(Acc::Min(Value::Null), &values), Value::Int(1));
        assert_eq!(fold(Acc::Max(Value::Null), &values), Value::Int(3));
        assert_eq!(fold(Acc::Avg(0.0, 0), &values), Value::Float(6.5 / 3.0));
        assert_eq!(fold(Acc::Last(Value::Null), &values), Value::Float(2.5));
        assert_eq!(fold(Acc::Avg(0.0, 0), &[]), Value::Null);
        let mut count = Acc::Count(0);
        count.add(None, "t").unwrap();
        assert_eq!(count.value(), Value::Int(1));
        assert!(
            Acc::Sum(Value::Null)
                .add(Some(&Value::String("x".into())), "t")
                .is_err()
        );
        let mut sum = Acc::Sum(Value::Int(1));
        assert!(sum.add(Some(&Value::String("x".into())), "t").is_err());
    }

    #[test]
    fn a_udf_accumulator_keeps_every_value_until_folded() {
        let mut acc = Acc::Udf(vec![Value::Int(0)]);
        assert_eq!(acc.unfolded(), None);
        acc.add(Some(&Value::Null), "t").unwrap();
        acc.merge(&Acc::Udf(vec![Value::Int(2)]), "t").unwrap();
        assert_eq!(
            acc.unfolded().unwrap(),
            [Value::Int(0), Value::Null, Value::Int(2)]
        );
        assert_eq!(acc.value(), Value::Int(0));
    }

    #[test]
    fn accumulators_survive_a_checkpoint() {
        for acc in [
            Acc::Count(3),
            Acc::Sum(Value::Int(4)),
            Acc::Min(Value::Null),
            Acc::Max(Value::String("z".into())),
            Acc::Avg(2.5, 2),
            Acc::Last(Value::Int(-1)),
            Acc::Udf(vec![Value::Int(7)]),
        ] {
            assert_eq!(Acc::restore(&acc.save()).unwrap(), acc);
        }
        assert!(Acc::restore(&Value::Int(1)).is_err());
    }
}
