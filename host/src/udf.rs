//! A user function bound to an operator: a WASM component's export, run on the
//! operator's instance pool, or a native function run in-process (built-in operators'
//! helpers, benchmarks). Both take and give whole batch partitions.

use std::sync::Arc;

use sluice_abi::encoding::cell_parts;
use sluice_abi::{
    Batch, Combiner, Failed, Function, Groups, Kind, Merge, NamedFunction, OneRecord, Stage,
};

use crate::runtime::{CallError, InstancePool, SentBatch};

/// The most records a record-at-a-time function is given in one call.
const CHUNK_RECORDS: usize = 4096;
/// The most bytes of records a record-at-a-time function is given in one call.
const CHUNK_BYTES: usize = 256 << 10;

/// The most records, and bytes of records, a combining chain is given in one call: four
/// times a record-at-a-time call's, so that a guest whose table of keys has grown large
/// folds enough pairs into each region of it at once (docs/combining.md); the guest's
/// memory for the call's waiting pairs (about 20 MiB at most for words) and the call's
/// time stay far within the job's `memory` and `call_timeout`.
const COMBINE_CHUNK_RECORDS: usize = 4 * CHUNK_RECORDS;
/// See [`COMBINE_CHUNK_RECORDS`].
const COMBINE_CHUNK_BYTES: usize = 4 * CHUNK_BYTES;

/// A function an operator calls once per partition (record-at-a-time kinds: once per
/// chunk of a partition).
#[derive(Clone)]
pub enum BoundUdf {
    /// An export of a WASM component.
    Wasm {
        /// The pool of instances of the operator's component.
        pool: Arc<InstancePool>,
        /// The export's index in the component's function list.
        index: u32,
        /// Its kind.
        kind: Kind,
        /// How manifests and errors name it (`wordcount.wasm#tokenize`).
        label: String,
    },
    /// A Rust function compiled into the host.
    Native(NamedFunction),
}

/// A UDF call that failed, with the function's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdfError {
    /// The function, as manifests name it.
    pub udf: String,
    /// What went wrong.
    pub error: CallError,
}

impl UdfError {
    /// The same error for a chunk that starts at record `first` of its partition.
    fn shifted(self, first: usize) -> Self {
        Self {
            udf: self.udf,
            error: self.error.shifted(first),
        }
    }
}

impl std::fmt::Display for UdfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UDF `{}` {}", self.udf, self.error)?;
        if let Some(index) = self.error.record_index() {
            write!(f, " (record {index} of its partition)")?;
        }
        Ok(())
    }
}

impl std::error::Error for UdfError {}

impl BoundUdf {
    /// How manifests and errors name the function.
    pub fn label(&self) -> &str {
        match self {
            BoundUdf::Wasm { label, .. } => label,
            BoundUdf::Native(named) => named.name,
        }
    }

    /// The function's kind.
    pub fn kind(&self) -> Kind {
        match self {
            BoundUdf::Wasm { kind, .. } => *kind,
            BoundUdf::Native(named) => named.function.kind(),
        }
    }

    /// Runs a map or map-partition function on one partition.
    pub fn records(&self, input: Batch) -> Result<Batch, UdfError> {
        if self.kind() == Kind::MapPartition {
            return self.call_records(SentBatch::new(input));
        }
        in_chunks(input, |chunk| {
            let sent = chunk.len();
            let mapped = self.call_records(chunk)?;
            self.check(Owed::exactly(sent, "results", "records", PER_RECORD).check(mapped.len()))?;
            Ok(mapped)
        })
    }

    /// Runs a flat-map function on one partition: group `i` holds what record `i` gave.
    pub fn flat_map(&self, input: Batch) -> Result<Groups, UdfError> {
        in_chunks(input, |chunk| {
            let sent = chunk.len();
            let groups = match self {
                BoundUdf::Wasm { pool, index, .. } => {
                    on_records(pool, self.label(), chunk, |instance, chunk| {
                        instance.call_flat_map(*index, chunk)
                    })?
                    .0
                }
                BoundUdf::Native(named) => match named.function {
                    Function::FlatMap(run) => {
                        run(&chunk.into_batch()).map_err(|failure| self.failed(failure))?
                    }
                    _ => unreachable!("operators call flat_map() only on flat-map functions"),
                },
            };
            self.check(
                Owed::exactly(sent, "groups of results", "records", PER_RECORD).check(groups.len()),
            )?;
            Ok(groups)
        })
    }

    /// Runs a filter function on one partition, returning the records it keeps.
    pub fn filter(&self, input: Batch) -> Result<Batch, UdfError> {
        in_chunks(input, |chunk| {
            let (chunk, keep) = match self {
                BoundUdf::Wasm { pool, index, .. } => {
                    let (keep, chunk) =
                        on_records(pool, self.label(), chunk, |instance, chunk| {
                            instance.call_filter(*index, chunk)
                        })?;
                    (chunk.into_batch(), keep)
                }
                BoundUdf::Native(named) => match named.function {
                    Function::Filter(run) => {
                        let chunk = chunk.into_batch();
                        let keep = run(&chunk).map_err(|failure| self.failed(failure))?;
                        (chunk, keep)
                    }
                    _ => unreachable!("operators call filter() only on filters"),
                },
            };
            self.check(check_mask(chunk.len(), keep.len()))?;
            Ok(chunk.select(&keep))
        })
    }

    fn call_records(&self, input: SentBatch) -> Result<Batch, UdfError> {
        match self {
            BoundUdf::Wasm {
                pool, index, kind, ..
            } if *kind == Kind::MapPartition => on_instance(pool, self.label(), |instance| {
                instance.call_records(*kind, *index, input)
            }),
            BoundUdf::Wasm {
                pool, index, kind, ..
            } => on_records(pool, self.label(), input, |instance, input| {
                instance.call_records(*kind, *index, input)
            })
            .map(|(mapped, _)| mapped),
            BoundUdf::Native(named) => match named.function {
                Function::Map(run) | Function::MapPartition(run) => {
                    run(&input.into_batch()).map_err(|failure| self.failed(failure))
                }
                _ => unreachable!("operators call records() only on record functions"),
            },
        }
    }

    /// Runs a reduce or fold function on every group: one result per group.
    pub fn aggregate(&self, input: Groups) -> Result<Batch, UdfError> {
        let sent = input.len();
        let folded = match self {
            BoundUdf::Wasm { pool, index, .. } => on_instance(pool, self.label(), |instance| {
                instance.call_aggregate(*index, input)
            })?,
            BoundUdf::Native(named) => match named.function {
                Function::Reduce(run) | Function::Fold(run) => {
                    run(&input).map_err(|failure| self.failed(failure))?
                }
                _ => unreachable!("operators call aggregate() only on reduce and fold functions"),
            },
        };
        self.check(Owed::exactly(sent, "results", "groups", PER_GROUP).check(folded.len()))?;
        Ok(folded)
    }

    /// Runs an update-state function on every key's group `[state cell, new values...]`
    /// for the batch of `time_ms`: one new state cell per group.
    pub fn update_state(&self, time_ms: i64, input: Groups) -> Result<Batch, UdfError> {
        let sent = input.len();
        let cells = match self {
            BoundUdf::Wasm { pool, index, .. } => on_instance(pool, self.label(), |instance| {
                instance.call_update_state(*index, time_ms, input)
            })?,
            BoundUdf::Native(named) => match named.function {
                Function::UpdateState(run) => {
                    run(&input, time_ms).map_err(|failure| self.failed(failure))?
                }
                _ => unreachable!("operators call update_state() only on update-state functions"),
            },
        };
        self.check(Owed::exactly(sent, "state cells", "keys", PER_GROUP).check(cells.len()))?;
        self.check(check_cells(cells.iter()))?;
        Ok(cells)
    }

    /// Runs a map-with-state function on every key's group `[key, (state cell, timing
    /// out), values...]` for the batch of `time_ms`: per group, `[new state cell,
    /// emitted...]`.
    pub fn map_with_state(&self, time_ms: i64, input: Groups) -> Result<Groups, UdfError> {
        let sent = input.len();
        let results = match self {
            BoundUdf::Wasm { pool, index, .. } => on_instance(pool, self.label(), |instance| {
                instance.call_map_with_state(*index, time_ms, input)
            })?,
            BoundUdf::Native(named) => match named.function {
                Function::MapWithState(run) => {
                    run(&input, time_ms).map_err(|failure| self.failed(failure))?
                }
                _ => {
                    unreachable!("operators call map_with_state() only on map-with-state functions")
                }
            },
        };
        self.check(Owed::exactly(sent, "groups", "keys", PER_GROUP).check(results.len()))?;
        self.check(check_cells((0..results.len()).map(|group| {
            let first = results.group(group).next();
            first.map_or(&[][..], |record| results.records().get(record))
        })))?;
        Ok(results)
    }

    /// A native function's record-at-a-time adapter, which native chains run.
    fn one_record(&self) -> OneRecord {
        match self {
            BoundUdf::Native(named) => named.one_record,
            BoundUdf::Wasm { .. } => unreachable!("a native chain's steps are native"),
        }
    }

    fn failed(&self, failure: sluice_abi::Failure) -> UdfError {
        self.error(CallError::Failed {
            message: failure.message,
            record_index: failure.record_index,
        })
    }

    fn error(&self, error: CallError) -> UdfError {
        UdfError {
            udf: self.label().to_owned(),
            error,
        }
    }

    fn check(&self, checked: Result<(), CallError>) -> Result<(), UdfError> {
        checked.map_err(|error| self.error(error))
    }
}

/// Calls a record-at-a-time function on chunks of the partition rather than all of it at
/// once: a few thousand records amortise the call as well as a million do (the shared
/// notes: batches of about 1k records capture nearly all of the gain), while buffers stay
/// in cache and a guest's memory is bounded by the chunk, not by the batch (measured:
/// WASM map 14.2 M rec/s against 11.4 M with one call per 500k-record partition).
///
/// A chunk is sent as a [`SentBatch`] of the partition, which a guest call lowers without
/// copying it out first (a native function is given a copy). The first chunk's answer
/// becomes the partition's, given room for the rest at its rate, so that the answers are
/// not copied again each time the output outgrows its buffer.
///
/// A failure that names no record (see [`on_records`]) names the chunk's records instead.
fn in_chunks<T: Answers>(
    input: Batch,
    mut call: impl FnMut(SentBatch) -> Result<T, UdfError>,
) -> Result<T, UdfError> {
    let placed = |error: UdfError, first: usize, count: usize| {
        if !error.error.wants_record() || count == 0 {
            return error.shifted(first);
        }
        UdfError {
            udf: error.udf,
            error: error.error.within_records(first, first + count - 1),
        }
    };
    if input.len() <= CHUNK_RECORDS && input.data().len() <= CHUNK_BYTES {
        let count = input.len();
        return call(SentBatch::new(input)).map_err(|error| placed(error, 0, count));
    }
    let partition = Arc::new(input);
    let mut output: Option<T> = None;
    for records in partition.chunk_ranges(CHUNK_RECORDS, CHUNK_BYTES) {
        let (first, count) = (records.start, records.len());
        let result = call(SentBatch::part(&partition, records))
            .map_err(|error| placed(error, first, count))?;
        match &mut output {
            Some(output) => output.append(&result),
            None => {
                let sent_bytes = partition.ends()[first + count - 1] as usize;
                let scale = room_for(partition.data().len(), sent_bytes, result.bytes());
                output = Some(result.with_room(scale, 2 * partition.data().len()));
            }
        }
    }
    Ok(output.unwrap_or_default())
}

/// The answers of a record-at-a-time function, which [`in_chunks`] concatenates.
trait Answers: Default {
    /// The bytes of the answers' records.
    fn bytes(&self) -> usize;
    /// These answers, in buffers with room for `scale` times as many, none of them given
    /// room for more than `most` bytes.
    fn with_room(self, scale: f64, most: usize) -> Self;
    /// Appends `more`.
    fn append(&mut self, more: &Self);
}

/// How many times the answers to the first `sent` of a partition's `bytes` the whole
/// partition's answers are expected to be, at the first answers' rate (`answered` bytes),
/// but at most twice the partition's bytes: a function whose first answers are far larger
/// than the rest's does not reserve memory the partition never needs.
fn room_for(bytes: usize, sent: usize, answered: usize) -> f64 {
    let at_first_rate = bytes as f64 / sent.max(1) as f64;
    at_first_rate.min(2.0 * bytes as f64 / answered.max(1) as f64)
}

/// `count` items scaled by `scale`, with a sixteenth to spare, but no more items of `size`
/// bytes than `most` bytes hold: the bytes' bound in [`room_for`] does not bound how many
/// records they are cut into (a guest may answer a million empty records), and the room
/// is reserved before any of it is used.
fn room(count: usize, scale: f64, size: usize, most: usize) -> usize {
    let scaled = count as f64 * scale;
    ((scaled + scaled / 16.0) as usize).min(most / size)
}

/// The bytes of one record's end in a batch's (or one group's in groups') offsets.
const END: usize = size_of::<u32>();

impl Answers for Batch {
    fn bytes(&self) -> usize {
        self.data().len()
    }

    fn with_room(self, scale: f64, most: usize) -> Self {
        let mut sized = Batch::with_capacity(
            room(self.len(), scale, END, most),
            room(self.data().len(), scale, 1, most),
        );
        sized.extend_from(&self);
        sized
    }

    fn append(&mut self, more: &Self) {
        self.extend_from(more);
    }
}

impl Answers for Groups {
    fn bytes(&self) -> usize {
        self.records().data().len()
    }

    fn with_room(self, scale: f64, most: usize) -> Self {
        let records = self.records();
        let mut sized = Groups::from_parts(
            Batch::with_capacity(
                room(records.len(), scale, END, most),
                room(records.data().len(), scale, 1, most),
            ),
            Vec::with_capacity(room(self.len(), scale, END, most)),
        )
        .expect("empty groups");
        sized.extend_from(&self);
        sized
    }

    fn append(&mut self, more: &Self) {
        self.extend_from(more);
    }
}

/// Runs `call` over `records` on an instance of `pool`, naming `label` in errors.
///
/// A call that the guest's own run stopped without telling which record it was working
/// on (a trap: the memory limit, a stack overflow; or the call timeout) is run again one
/// record at a time, each alone, until one fails the same way: the error then names that
/// record. Only a failing call pays for this, and keeps paying no more than the records
/// before the culprit and the culprit once more (for the timeout, its time again). A
/// trapped instance was discarded, so the records run again on a fresh one. The records
/// go to the call as a [`SentBatch`], which the caller keeps without a copy; the answer
/// comes with them.
fn on_records<R>(
    pool: &InstancePool,
    label: &str,
    records: SentBatch,
    call: impl Fn(&mut crate::runtime::UdfInstance, SentBatch) -> Result<R, CallError>,
) -> Result<(R, SentBatch), UdfError> {
    let named = |error| UdfError {
        udf: label.to_owned(),
        error,
    };
    let count = records.len();
    let error = match pool.with_instance(|instance| call(instance, records.clone())) {
        Ok(Ok(result)) => return Ok((result, records)),
        Ok(Err(error)) if error.wants_record() && count > 0 => error,
        Ok(Err(error)) | Err(error) => return Err(named(error)),
    };
    if count == 1 {
        return Err(named(error.at_record(0)));
    }
    for index in 0..count {
        let mut alone = Batch::new();
        alone.push_encoded(records.get(index));
        let alone = SentBatch::new(alone);
        match pool.with_instance(|instance| call(instance, alone)) {
            Ok(Ok(_)) => {}
            Ok(Err(failure)) if failure.is_like(&error) => {
                return Err(named(error.at_record(index)));
            }
            // A record that fails otherwise alone is not the one; a stopped job or an
            // instance that cannot be made ends the search.
            Ok(Err(CallError::Stopped { .. })) | Err(_) => break,
            Ok(Err(_)) => {}
        }
    }
    Err(named(error))
}

/// Runs `call` on an instance of `pool`, naming `label` in errors.
fn on_instance<R>(
    pool: &InstancePool,
    label: &str,
    call: impl FnOnce(&mut crate::runtime::UdfInstance) -> Result<R, CallError>,
) -> Result<R, UdfError> {
    let error = |error| UdfError {
        udf: label.to_owned(),
        error,
    };
    pool.with_instance(call).map_err(error)?.map_err(error)
}

/// Record-at-a-time functions (map, flat-map, filter) of one component run one after the
/// other in a single guest call per chunk, so that records between them never cross the
/// boundary (Spark likewise pipelines narrow transformations within one task).
pub enum UdfChain {
    /// Exports of one WASM component, called through its `chain` export.
    Wasm {
        /// The pool of instances of the component.
        pool: Arc<InstancePool>,
        /// The functions' indices, in order.
        functions: Vec<u32>,
        /// How errors name the chain.
        label: String,
    },
    /// Native functions, called one after the other.
    Native(Vec<BoundUdf>),
}

impl UdfChain {
    /// How errors name the chain.
    pub fn label(&self) -> String {
        match self {
            UdfChain::Wasm { label, .. } => label.clone(),
            UdfChain::Native(steps) => steps
                .iter()
                .map(BoundUdf::label)
                .collect::<Vec<_>>()
                .join(" -> "),
        }
    }

    /// Runs every function of the chain over one partition.
    pub fn run(&self, input: Batch) -> Result<Batch, UdfError> {
        match self {
            UdfChain::Wasm {
                pool,
                functions,
                label,
            } => {
                let owed = chain_owes(
                    functions
                        .iter()
                        .map(|&index| pool.component().functions()[index as usize].kind),
                );
                in_chunks(input, |chunk| {
                    let sent = chunk.len();
                    let (records, _) = on_records(pool, label, chunk, |instance, chunk| {
                        instance.call_chain(functions, chunk)
                    })?;
                    if let Some(owed) = owed {
                        owed(sent).check(records.len()).map_err(|error| UdfError {
                            udf: label.clone(),
                            error,
                        })?;
                    }
                    Ok(records)
                })
            }
            UdfChain::Native(steps) => {
                let functions: Vec<OneRecord> = steps.iter().map(BoundUdf::one_record).collect();
                sluice_abi::chain::run(&functions, &input).map_err(|Failed { stage, failure }| {
                    let Stage::Chain(step) = stage else {
                        unreachable!("a chain that does not combine fails in its steps only")
                    };
                    steps[step].failed(failure)
                })
            }
        }
    }
}

/// A chain of record-at-a-time functions followed by a reduction by key (`reduce_by_key`,
/// or `combine_by_key`'s create and merge-value), all of one component, run as one:
/// each partition's chunks go through the chain and straight into a table of combiners
/// by key, so only one pair per key leaves the partition (Spark combines in the map task
/// likewise). See docs/combining.md for why the table lives across a partition's chunks.
pub enum CombiningChain {
    /// Exports of one WASM component, called through its `combine` export on one instance
    /// per partition.
    Wasm {
        /// The pool of instances of the component.
        pool: Arc<InstancePool>,
        /// The chain's functions' indices, in order.
        functions: Vec<u32>,
        /// The map function making a key's combiner from its first value, if any.
        create: Option<u32>,
        /// The reduce (or, with `create`, fold) function folding values into combiners.
        merge: u32,
        /// How errors name the whole.
        label: String,
    },
    /// Native functions, combined by the same table the guests use.
    Native {
        /// The chain's steps.
        chain: UdfChain,
        /// The map function making a key's combiner from its first value, if any.
        create: Option<BoundUdf>,
        /// The reduce (or, with `create`, fold) function folding values into combiners.
        merge: BoundUdf,
    },
}

impl CombiningChain {
    /// How errors name the whole.
    pub fn label(&self) -> String {
        match self {
            CombiningChain::Wasm { label, .. } => label.clone(),
            CombiningChain::Native {
                chain,
                create,
                merge,
            } => {
                let mut label = chain.label();
                for udf in create.iter().chain([merge]) {
                    label.push_str(" -> ");
                    label.push_str(udf.label());
                }
                label
            }
        }
    }

    /// Runs the chain over one partition and combines its `(key, value)` results: one
    /// pair per key, keys in the order first seen.
    pub fn run(&self, input: Batch) -> Result<Batch, UdfError> {
        if input.is_empty() {
            return Ok(Batch::new());
        }
        match self {
            CombiningChain::Wasm {
                pool,
                functions,
                create,
                merge,
                label,
            } => on_instance(pool, label, |instance| {
                // One instance holds the partition's table from the first chunk to the
                // flush; a failed call leaves it part-way, so the instance is dropped.
                // Its chunks are sent from the partition, not copied out of it.
                let partition = Arc::new(input);
                let mut chunks = partition
                    .chunk_ranges(COMBINE_CHUNK_RECORDS, COMBINE_CHUNK_BYTES)
                    .peekable();
                while let Some(records) = chunks.next() {
                    let first = records.start;
                    let flush = chunks.peek().is_none();
                    let chunk = SentBatch::part(&partition, records);
                    let answer = instance
                        .call_combine(functions, *create, *merge, chunk, flush)
                        .and_then(|pairs| {
                            if flush || pairs.is_empty() {
                                Ok(pairs)
                            } else {
                                Err(CallError::invalid(
                                    format!(
                                        "answered a call without `flush` with {} records, where none are \
                                         owed: the component is faulty",
                                        pairs.len()
                                    ),
                                    None,
                                ))
                            }
                        });
                    match answer {
                        Ok(pairs) if flush => return Ok(pairs),
                        Ok(_) => {}
                        Err(error) => {
                            instance.retire();
                            return Err(error.shifted(first));
                        }
                    }
                }
                unreachable!("a partition with records has a last chunk")
            }),
            CombiningChain::Native {
                chain,
                create,
                merge,
            } => {
                let UdfChain::Native(steps) = chain else {
                    unreachable!("a native combining chain has native steps")
                };
                let one_record = BoundUdf::one_record;
                let merging = Merge {
                    create: create.as_ref().map(|create| match one_record(create) {
                        OneRecord::Map(run) => run,
                        _ => unreachable!("a native combining chain creates with a native map"),
                    }),
                    merge: match one_record(merge) {
                        OneRecord::Fold(run) => run,
                        _ => unreachable!("a native combining chain merges with a native fold"),
                    },
                };
                let functions: Vec<OneRecord> = steps.iter().map(one_record).collect();
                let mut table = Combiner::new();
                for (first, chunk) in input.chunks(COMBINE_CHUNK_RECORDS, COMBINE_CHUNK_BYTES) {
                    table.add(&functions, merging, &chunk).map_err(
                        |Failed { stage, failure }| {
                            let udf = match stage {
                                Stage::Chain(step) => &steps[step],
                                Stage::Create => create.as_ref().unwrap_or(merge),
                                Stage::Merge => merge,
                            };
                            udf.failed(failure).shifted(first)
                        },
                    )?;
                }
                Ok(table.flush())
            }
        }
    }
}

/// Per-record answers: a short one names the first record left without its answer.
const PER_RECORD: bool = true;
/// Per-group answers.
const PER_GROUP: bool = false;

/// How many answers a call owes for what it was sent. Every answer a guest gives is
/// checked against it: a component written against the WIT world directly is not bound
/// by the SDK's habits, and a short answer would otherwise lose records silently (or
/// make the host index past its end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owed {
    count: usize,
    /// `count` is a most, not an exact number (a chain with filters).
    at_most: bool,
    /// What the answers and the inputs are called in errors.
    answers: &'static str,
    inputs: &'static str,
    per_record: bool,
}

impl Owed {
    fn exactly(
        count: usize,
        answers: &'static str,
        inputs: &'static str,
        per_record: bool,
    ) -> Self {
        Self {
            count,
            at_most: false,
            answers,
            inputs,
            per_record,
        }
    }

    /// A failed call naming the expected and actual counts, unless `got` is what was owed.
    fn check(self, got: usize) -> Result<(), CallError> {
        let fits = if self.at_most {
            got <= self.count
        } else {
            got == self.count
        };
        if fits {
            return Ok(());
        }
        let expected = if self.at_most {
            format!("at most {}", self.count)
        } else {
            format!("exactly {}", self.count)
        };
        let first_unanswered = (self.per_record && got < self.count).then_some(got);
        Err(CallError::invalid(
            format!(
                "returned {got} {} for {} {}, where {expected} are owed: one call's answer \
                 must match its input, so the component is faulty",
                self.answers, self.count, self.inputs
            ),
            first_unanswered,
        ))
    }
}

/// What a chain of functions of `kinds` owes for `n` records: exactly `n` if it only maps,
/// at most `n` with filters, anything with a flat-map (`None`: nothing to check).
fn chain_owes(kinds: impl Iterator<Item = Kind>) -> Option<fn(usize) -> Owed> {
    let mut filters = false;
    for kind in kinds {
        match kind {
            Kind::FlatMap => return None,
            Kind::Filter => filters = true,
            _ => {}
        }
    }
    Some(if filters {
        |n| Owed {
            at_most: true,
            ..Owed::exactly(n, "records", "input records", PER_GROUP)
        }
    } else {
        |n| Owed::exactly(n, "records", "input records", PER_RECORD)
    })
}

/// A filter's answer for `records` records must be one bit per record, in whole bytes.
fn check_mask(records: usize, bytes: usize) -> Result<(), CallError> {
    let owed = records.div_ceil(8);
    if bytes == owed {
        return Ok(());
    }
    Err(CallError::invalid(
        format!(
            "returned a mask of {bytes} bytes for {records} records, where exactly {owed} are \
             owed (one bit per record): the component is faulty"
        ),
        None,
    ))
}

/// Every answer of a state function must start with a state cell: a list of no element
/// (no state) or one (the state).
fn check_cells<'c>(cells: impl Iterator<Item = &'c [u8]>) -> Result<(), CallError> {
    for (group, cell) in cells.enumerate() {
        if cell_parts(cell).is_none() {
            return Err(CallError::invalid(
                format!(
                    "answered group {group} of its input without a state cell (a list of no \
                     element or one) where one is owed: the component is faulty"
                ),
                None,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_counts_pass_and_others_name_both_counts() {
        let owed = Owed::exactly(3, "results", "records", PER_RECORD);
        assert!(owed.check(3).is_ok());
        let short = owed.check(1).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("returned 1 results for 3 records, where exactly 3"),
            "{short}"
        );
        assert_eq!(
            short.record_index(),
            Some(1),
            "the first record left unanswered"
        );
        let long = owed.check(5).unwrap_err();
        assert_eq!(long.record_index(), None);
        assert!(long.to_string().contains("returned 5 results"), "{long}");
    }

    #[test]
    fn a_failure_naming_no_record_names_its_chunks_records() {
        let mut input = Batch::new();
        for record in 0..CHUNK_RECORDS as i64 + 10 {
            input.push(&record).unwrap();
        }
        let mut calls = 0;
        let error = in_chunks(input, |chunk| {
            calls += 1;
            if calls == 1 {
                return Ok(chunk.into_batch());
            }
            Err(UdfError {
                udf: "f.wasm#g".into(),
                error: CallError::Trapped {
                    message: "trapped".into(),
                    record_index: None,
                },
            })
        })
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("working on records 4096 to 4105 of its partition"),
            "{error}"
        );
        let mut input = Batch::new();
        input.push(&1i64).unwrap();
        let failed = |record_index| {
            move |_| -> Result<Batch, UdfError> {
                Err(UdfError {
                    udf: "f.wasm#g".into(),
                    error: CallError::Trapped {
                        message: "panicked: no".into(),
                        record_index,
                    },
                })
            }
        };
        let placed = in_chunks(input, failed(Some(0))).unwrap_err();
        assert_eq!(
            placed.to_string(),
            "UDF `f.wasm#g` panicked: no (record 0 of its partition)"
        );
    }

    #[test]
    fn chunks_are_sent_from_the_partition_and_their_answers_joined_in_order() {
        let mut input = Batch::new();
        for record in 0..3 * CHUNK_RECORDS as i64 + 5 {
            input.push(&format!("record {record}")).unwrap();
        }
        let mut starts = vec![];
        let same = in_chunks(input.clone(), |chunk| {
            starts.push(chunk.get(0).as_ptr());
            Ok(chunk.into_batch())
        })
        .unwrap();
        assert_eq!(same, input);
        assert_eq!(starts.len(), 4);
        let doubled = in_chunks(input.clone(), |chunk| {
            let mut twice = Batch::new();
            (0..chunk.len()).for_each(|i| {
                twice.push_encoded(chunk.get(i));
                twice.push_encoded(chunk.get(i));
            });
            Ok(
                Groups::from_parts(twice, (1..=chunk.len() as u32).map(|i| 2 * i).collect())
                    .unwrap(),
            )
        })
        .unwrap();
        assert_eq!(doubled.len(), input.len());
        assert!((0..input.len()).all(|i| {
            let group = doubled.group(i);
            group.len() == 2
                && group
                    .map(|r| doubled.records().get(r))
                    .all(|r| r == input.get(i))
        }));
    }

    #[test]
    fn room_is_made_at_the_first_answers_rate_up_to_twice_the_partition() {
        assert_eq!(room_for(1000, 100, 100), 10.0, "a map");
        assert_eq!(room_for(1000, 100, 10), 10.0, "a filter keeping a tenth");
        assert_eq!(room_for(1000, 100, 1000), 2.0, "an explosion, capped");
        assert_eq!(room(160, 10.0, 1, usize::MAX), 1700);
        assert_eq!(room(160, 10.0, 1, 1000), 1000, "at most `most` bytes");
        // A million empty records answered for the first of a partition's 10 MiB: the
        // bytes' rate leaves the scale at the partition's, and the records' room is what
        // twice the partition holds, not a hundred million ends.
        let scale = room_for(10 << 20, 8 << 10, 0);
        assert_eq!(room(1_000_000, scale, END, 20 << 20), (20 << 20) / END);
    }

    #[test]
    fn chains_owe_by_their_kinds() {
        let maps = chain_owes([Kind::Map, Kind::Map].into_iter()).unwrap();
        assert!(maps(4).check(4).is_ok() && maps(4).check(3).is_err());
        let filtered = chain_owes([Kind::Map, Kind::Filter].into_iter()).unwrap();
        assert!(filtered(4).check(0).is_ok() && filtered(4).check(4).is_ok());
        let error = filtered(4).check(5).unwrap_err();
        assert!(
            error.to_string().contains("where at most 4 are owed"),
            "{error}"
        );
        assert!(chain_owes([Kind::Filter, Kind::FlatMap].into_iter()).is_none());
    }

    #[test]
    fn a_mask_holds_one_bit_per_record() {
        assert!(check_mask(0, 0).is_ok());
        assert!(check_mask(8, 1).is_ok());
        assert!(check_mask(9, 2).is_ok());
        let short = check_mask(9, 1).unwrap_err();
        assert!(
            short
                .to_string()
                .contains("a mask of 1 bytes for 9 records, where exactly 2"),
            "{short}"
        );
        assert!(check_mask(3, 2).is_err(), "a long mask is refused too");
    }

    #[test]
    fn state_answers_must_start_with_a_cell() {
        let mut cells = Batch::new();
        cells.push(&Vec::<i64>::new()).unwrap();
        cells.push(&vec![7i64]).unwrap();
        assert!(check_cells(cells.iter()).is_ok());
        cells.push(&vec![1i64, 2]).unwrap();
        let error = check_cells(cells.iter()).unwrap_err();
        assert!(error.to_string().contains("group 2"), "{error}");
        assert!(
            check_cells([&[][..]].into_iter()).is_err(),
            "an empty group"
        );
    }
}
