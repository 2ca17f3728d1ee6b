//! A job: its graph and sinks, and the computation of one batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sluice_abi::{Batch, NamedFunction};
use tokio_util::sync::CancellationToken;

use crate::dataset::Dataset;
use crate::failure::{Failing, FailureKind};
use crate::graph::JobGraph;
use crate::manifest::JobConfig;
use crate::operators::BatchContext;
use crate::runtime::Runtime;
use crate::scheduler::{Crews, HostTurn};
use crate::sinks::{self, Collected, Sink};
use crate::tenancy::HeldBytes;

/// A built job, ready to compute batches.
pub struct Job {
    config: JobConfig,
    graph: JobGraph,
    /// The host's threads, shared by its jobs: each batch computes on a crew of them (one
    /// per core) that no other batch uses meanwhile. A job whose guest calls wait
    /// (queued, or blocked in a clock wait) holds only its batch's crew, never another
    /// job's.
    crews: Crews,
    /// The job's turn at host work on the fair scheduler: its batches compute only while
    /// it holds a run slot, in slices ([`crate::scheduler::slice`]).
    turn: Arc<HostTurn>,
    /// The host memory the job holds, counted against its tenant's `max_host_bytes`.
    held: HeldBytes,
    /// Cancels the job's guest calls: a forced stop.
    force_stop: CancellationToken,
    /// The tenant's most records in one batch.
    max_batch_records: usize,
    tenant: String,
    sinks: Vec<Box<dyn Sink>>,
    collected: Collected,
    /// Batches processed so far (batches are processed one at a time, in order).
    batches_done: std::sync::atomic::AtomicU64,
}

/// What computing one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Records the sources brought.
    pub records_in: usize,
    /// Records delivered to sinks.
    pub records_out: usize,
    /// Time spent computing and writing the batch.
    pub processing: Duration,
}

impl Job {
    /// Builds the job's operators (instantiating its UDFs) and sinks.
    pub fn build(config: JobConfig, runtime: &Runtime) -> Result<Self> {
        Self::build_with(config, runtime, None)
    }

    /// Builds the job with its UDF references bound to `natives` by name rather than to
    /// WASM instances (see [`JobGraph::build`]).
    pub fn build_with(
        config: JobConfig,
        runtime: &Runtime,
        natives: Option<&[NamedFunction]>,
    ) -> Result<Self> {
        let force_stop = CancellationToken::new();
        let placement =
            runtime
                .tenancy()
                .place(&config, runtime.scheduler(), force_stop.clone())?;
        // Building the graph is mostly loading and instantiating its UDFs' components: a
        // failure of anything else there (an initial state's file) says its own kind.
        let graph = JobGraph::build(&config, runtime, &placement, natives).map_err(|error| {
            crate::failure::context_of_kind(
                error,
                FailureKind::Udf,
                format!("cannot build job `{}`", config.name),
            )
        })?;
        let turn = placement.seat.host_turn();
        let held = HeldBytes::new(placement.account.clone(), &config.name);
        let collected = Collected::default();
        let sinks = config
            .sinks
            .iter()
            .map(|sink| sinks::build(sink, &collected, &config))
            .collect::<Result<_>>()?;
        Ok(Self {
            config,
            graph,
            crews: runtime.scheduler().crews().clone(),
            held,
            turn,
            force_stop,
            max_batch_records: placement.account.quotas().max_batch_records,
            tenant: placement.account.name().to_owned(),
            sinks,
            collected,
            batches_done: AtomicU64::new(0),
        })
    }

    /// Cancels the job's guest calls, running or queued: the batch in flight fails, to be
    /// re-run from the write-ahead log at the next start.
    pub fn force_stop(&self) {
        self.force_stop.cancel();
    }

    /// Whether [`Job::force_stop`] was called.
    pub fn is_force_stopped(&self) -> bool {
        self.force_stop.is_cancelled()
    }

    /// The tenant the job runs for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// What the job's batch in flight is doing (the status line and metrics read it).
    pub fn progress(&self) -> &Arc<crate::progress::BatchProgress> {
        self.graph.progress()
    }

    /// The job's configuration.
    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// Every step's meter as `(stream/step number, meter)`, in graph order.
    pub fn step_meters(&self) -> Vec<(&str, &Arc<crate::metrics::StepMeter>)> {
        self.graph.step_meters()
    }

    /// The steps that keep state (what checkpoints save).
    pub fn stateful_steps(&self) -> Vec<crate::graph::StatefulStep<'_>> {
        self.graph.stateful_steps()
    }

    /// Every step's UDFs as `(manifest label, component SHA-256)`.
    pub fn udf_digests(&self) -> Vec<(&str, &str)> {
        self.graph.udf_digests()
    }

    /// What the last batch did with event time: the watermark it used, its rows' event
    /// times, and each stateful event-time step's state and late rows.
    pub fn event_time_report(&self) -> Option<crate::event_time::BatchReport> {
        self.graph.event_clock().last_report()
    }

    /// The job's event-time watermark (what a re-run batch is told to use again).
    pub fn event_clock(&self) -> &crate::event_time::EventClock {
        self.graph.event_clock()
    }

    /// Numbers the next batch `number + 1`: the job resumes after batch `number`.
    pub fn resume_after(&self, number: u64) {
        self.batches_done.store(number, Ordering::Relaxed);
    }

    /// What the job's collect sinks have kept.
    pub fn collected(&self) -> &Collected {
        &self.collected
    }

    /// Runs `work` on a crew of the host's threads that no other batch uses meanwhile (a
    /// batch, with what follows it: [`Job::process`] there runs on the same crew), and
    /// awaits it without holding the calling thread. A panic in `work` is an error.
    pub async fn on_crew<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Job) -> T + Send + 'static,
    ) -> Result<T> {
        let job = self.clone();
        self.crews.compute(&self.turn, move || work(&job)).await
    }

    /// Computes the batch of time `time_ms` from each source's records (in source order)
    /// and writes it to every sink.
    pub fn process(&self, time_ms: i64, inputs: Vec<Batch>) -> Result<BatchStats> {
        // The turn is taken at the first tick of a host loop: a small batch's few records
        // never queue for it.
        self.crews
            .run(&self.turn, || {
                let processed = self.process_here(time_ms, inputs);
                self.turn.release();
                processed
            })
            .with_context(|| {
                format!(
                    "job `{}` cannot compute the batch of time {time_ms} ms",
                    self.config.name
                )
            })?
    }

    /// The host memory the job's state and window stores hold; measured only for a
    /// tenant with a `max_host_bytes` quota (it costs a pass over the state).
    fn state_bytes(&self) -> u64 {
        if !self.held.is_limited() {
            return 0;
        }
        self.graph
            .stateful_steps()
            .iter()
            .map(|step| step.state.bytes() as u64)
            .sum()
    }

    /// A count of its own, against the tenant's `max_host_bytes`, for host memory the job
    /// holds outside its batches (its receivers' buffers).
    pub fn another_held_count(&self) -> HeldBytes {
        self.held.another()
    }

    /// The host memory the job's batches and state hold now, in bytes (its tenant's
    /// quota counts it).
    pub fn held_bytes(&self) -> u64 {
        self.held.held()
    }

    fn process_here(&self, time_ms: i64, inputs: Vec<Batch>) -> Result<BatchStats> {
        let started = Instant::now();
        let records_in: usize = inputs.iter().map(Batch::len).sum();
        if records_in > self.max_batch_records {
            return Err(Failing::quota(format!(
                "job `{}` cannot compute the batch of time {time_ms} ms: its {records_in} records \
                 are over tenant `{}`'s quota `max_batch_records` of {} (the host configuration \
                 sets it)",
                self.config.name, self.tenant, self.max_batch_records
            )));
        }
        let state_bytes = self.state_bytes();
        let in_flight = |data: u64| state_bytes + data;
        let received: u64 = inputs.iter().map(crate::receivers::held_size).sum();
        self.held
            .hold(in_flight(received), "batch in flight and state")?;
        let batch = BatchContext {
            time_ms,
            partitions: self.config.partitions,
            number: self.batches_done.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let failed = || {
            format!(
                "job `{}` failed on the batch of time {time_ms} ms",
                self.config.name
            )
        };
        let sources = inputs
            .into_iter()
            .map(|records| Dataset::split(records, batch.partitions))
            .collect();
        let outputs = self
            .graph
            .compute_watched(sources, &batch, |held| {
                let bytes: usize = held.iter().flatten().map(Dataset::bytes).sum();
                self.held
                    .hold(in_flight(bytes as u64), "batch in flight and state")
            })
            .with_context(failed)?;
        // Sinks may wait on the world outside (files, sockets, brokers): not on a run slot.
        self.turn.release();
        let mut records_out = 0;
        for ((sink, config), data) in self.sinks.iter().zip(&self.config.sinks).zip(&outputs) {
            let Some(data) = data else { continue };
            records_out += data.len();
            sink.write(time_ms, data)
                .with_context(|| {
                    Failing::new(
                        FailureKind::Sink,
                        format!("sink `{}` could not write", config.name),
                    )
                })
                .with_context(failed)?;
        }
        self.held
            .hold(self.state_bytes(), "state")
            .with_context(failed)?;
        self.graph.meter_state();
        Ok(BatchStats {
            records_in,
            records_out,
            processing: started.elapsed(),
        })
    }
}
