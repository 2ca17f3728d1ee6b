//! A fused chain of map, flat-map and filter functions run over a batch one record at a
//! time: each input record goes through every step before the next is read, passed from
//! step to step as [`handoff`](crate::handoff) passes it (strings and numbers borrowed,
//! nothing gathered into a batch between steps), and only what the last step makes is
//! encoded, into the answer. Guests run it behind the `chain` export; the host runs the
//! same code for native chains.

use crate::batch::Batch;
use crate::combine::{Downstream, Failed, Link};
use crate::function::{OneRecord, Progress};
use crate::handoff::Record;

/// Runs `steps` over every record of `input`: the records the last step makes, in order.
/// A failure names its step ([`Stage::Chain`](crate::Stage::Chain)) and the index in
/// `input` of the record it came from, whichever step it happened in.
pub fn run(steps: &[OneRecord], input: &Batch) -> Result<Batch, Failed> {
    let progress = Progress::start();
    let mut links = Link::chain(steps);
    let mut failed = None;
    let mut output = Batch::with_capacity(input.len(), input.data().len());
    for (index, record) in input.iter().enumerate() {
        progress.at(index);
        let sent = Downstream::new(&mut links, index, &mut output, &mut failed)
            .send(Record::outside(record));
        if sent.is_err() {
            return Err(failed.expect("a failure in the chain is kept"));
        }
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::combine::Stage;
    use crate::combine::tests::{is_long, with_one, words};
    use crate::function::{Function, NamedFunction};
    use crate::value::Value;

    fn shouted(word: String) -> String {
        word.to_uppercase()
    }
    fn weighed(pair: (String, i64)) -> Value {
        Value::List(vec![
            Value::String(pair.0),
            Value::Float(pair.1 as f64 / 2.0),
            Value::Null,
        ])
    }
    fn is_short_list(value: Vec<Value>) -> bool {
        value.len() < 5
    }
    const FUNCTIONS: &[NamedFunction] = crate::functions! {
        flat_map words,
        filter is_long,
        map with_one,
        map shouted,
        map weighed,
        filter is_short_list,
    };

    fn steps(numbers: &[usize]) -> Vec<OneRecord> {
        numbers
            .iter()
            .map(|&step| FUNCTIONS[step].one_record)
            .collect()
    }

    fn lines(lines: &[&str]) -> Batch {
        let mut batch = Batch::new();
        lines.iter().for_each(|line| batch.push(line).unwrap());
        batch
    }

    /// `numbers` run one after the other over whole batches by the batch adapters.
    fn step_by_step(numbers: &[usize], input: &Batch) -> Batch {
        numbers.iter().fold(input.clone(), |records, &step| {
            match FUNCTIONS[step].function {
                Function::Map(run) => run(&records).unwrap(),
                Function::FlatMap(run) => run(&records).unwrap().into_parts().0,
                Function::Filter(run) => records.select(&run(&records).unwrap()),
                _ => unreachable!("the table has record functions only"),
            }
        })
    }

    #[test]
    fn a_chain_run_record_by_record_makes_the_bytes_its_steps_make_batch_by_batch() {
        let input = lines(&["the river the gate", "", "a sluice", "Stream flows"]);
        for numbers in [
            &[0][..],
            &[0, 1],
            &[0, 1, 2],
            &[0, 3, 1],
            &[0, 1, 2, 4],
            &[0, 1, 2, 4, 5],
            &[0, 2, 4, 5],
            &[1],
        ] {
            let chained = run(&steps(numbers), &input).unwrap();
            let stepped = step_by_step(numbers, &input);
            assert_eq!(chained.ends(), stepped.ends(), "chain {numbers:?}");
            assert_eq!(chained.data(), stepped.data(), "chain {numbers:?}");
        }
    }

    #[test]
    fn a_failure_names_its_step_and_the_input_record_it_came_from() {
        let input = lines(&["a b", "river"]);
        let failed = run(&steps(&[0, 1, 2, 3]), &input).unwrap_err();
        assert_eq!(failed.stage, Stage::Chain(3));
        assert_eq!(failed.failure.record_index, Some(1));
        assert!(
            failed.failure.message.contains("[\"river\",1]"),
            "the record the step was given is shown: {failed:?}"
        );

        let mut wrong = Batch::new();
        wrong.push(&7).unwrap();
        let failed = run(&steps(&[0]), &wrong).unwrap_err();
        assert_eq!(failed.stage, Stage::Chain(0));
        assert!(
            failed.failure.message.contains("does not fit"),
            "{failed:?}"
        );
    }
}
