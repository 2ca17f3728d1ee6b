//! The Kafka source and sink of a manifest: their keys, checked and resolved.

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::{Resolver, Result};
use crate::connectors::kafka::{
    Delivery, Format, KafkaSinkConfig, KafkaSourceConfig, OnDecodeError, StartingOffsets, Topics,
};
use crate::manifest::bounds;
use crate::manifest::spec::{SinkSpec, SourceSpec};
use crate::receivers::rate::RateConfig;

/// The keys a Kafka source takes.
pub(super) const SOURCE_KEYS: &[&str] = &[
    "brokers",
    "topics",
    "topic_pattern",
    "starting_offsets",
    "max_records_per_partition",
    "backpressure",
    "initial_rate",
    "max_rate",
    "key_format",
    "value_format",
    "metadata",
    "group_id",
    "properties",
    "on_decode_error",
];

/// The keys a Kafka sink takes.
pub(super) const SINK_KEYS: &[&str] = &[
    "brokers",
    "topic",
    "format",
    "pairs",
    "delivery",
    "properties",
];

type Field = (&'static str, Option<Range<usize>>);

fn span<T>(field: &Option<Spanned<T>>) -> Option<Range<usize>> {
    field.as_ref().map(Spanned::span)
}

/// The Kafka keys of a source table, with where they are written.
pub(super) fn source_fields(spec: &SourceSpec) -> Vec<Field> {
    vec![
        ("brokers", span(&spec.brokers)),
        ("topics", span(&spec.topics)),
        ("topic_pattern", span(&spec.topic_pattern)),
        ("starting_offsets", span(&spec.starting_offsets)),
        (
            "max_records_per_partition",
            span(&spec.max_records_per_partition),
        ),
        ("backpressure", span(&spec.backpressure)),
        ("initial_rate", span(&spec.initial_rate)),
        ("max_rate", span(&spec.max_rate)),
        ("key_format", span(&spec.key_format)),
        ("value_format", span(&spec.value_format)),
        ("metadata", span(&spec.metadata)),
        ("group_id", span(&spec.group_id)),
        ("properties", span(&spec.properties)),
        ("on_decode_error", span(&spec.on_decode_error)),
    ]
}

/// The Kafka keys of a sink table (beside `format`, which files sinks share).
pub(super) fn sink_fields(spec: &SinkSpec) -> Vec<Field> {
    vec![
        ("brokers", span(&spec.brokers)),
        ("topic", span(&spec.topic)),
        ("pairs", span(&spec.pairs)),
        ("delivery", span(&spec.delivery)),
        ("properties", span(&spec.properties)),
    ]
}

const FORMATS: [(&str, Format); 3] = [
    ("bytes", Format::Bytes),
    ("string", Format::String),
    ("json", Format::Json),
];

fn properties(field: &Option<Spanned<BTreeMap<String, String>>>) -> BTreeMap<String, String> {
    field
        .as_ref()
        .map_or_else(BTreeMap::new, |properties| properties.get_ref().clone())
}

impl Resolver<'_> {
    pub(super) fn kafka_source(&self, spec: &SourceSpec) -> Result<KafkaSourceConfig> {
        let what = "a kafka source";
        let brokers = self.required(&spec.brokers, &spec.kind, "brokers", what)?;
        let topics = match (&spec.topics, &spec.topic_pattern) {
            (Some(topics), None) if !topics.get_ref().is_empty() => {
                Topics::Names(topics.get_ref().clone())
            }
            (None, Some(pattern)) => {
                if let Err(error) = regex::Regex::new(pattern.get_ref()) {
                    return Err(self.error(
                        Some(pattern.span()),
                        format!("`topic_pattern` is not a regular expression: {error}"),
                        "write a regular expression that matches whole topic names, e.g. \"events-.*\"",
                    ));
                }
                Topics::Pattern(pattern.get_ref().clone())
            }
            (Some(topics), None) => {
                return Err(self.error(
                    Some(topics.span()),
                    "`topics` is empty",
                    "name at least one topic",
                ));
            }
            (Some(_), Some(pattern)) => {
                return Err(self.error(
                    Some(pattern.span()),
                    "a kafka source has both `topics` and `topic_pattern`",
                    "keep one of them",
                ));
            }
            (None, None) => {
                return Err(self.error(
                    Some(spec.kind.span()),
                    "a kafka source needs `topics` or `topic_pattern`",
                    "add `topics = [\"events\"]` or `topic_pattern = \"events-.*\"`",
                ));
            }
        };
        let value_format = self
            .choice(&spec.value_format, "value format", &FORMATS)?
            .unwrap_or(Format::String);
        let key_format = self.choice(&spec.key_format, "key format", &FORMATS)?;
        let on_decode_error = self
            .choice(
                &spec.on_decode_error,
                "on_decode_error policy",
                &[("fail", OnDecodeError::Fail), ("skip", OnDecodeError::Skip)],
            )?
            .unwrap_or(OnDecodeError::Fail);
        let max_records_per_partition = spec
            .max_records_per_partition
            .as_ref()
            .map(|max| {
                self.count(
                    max,
                    "max_records_per_partition",
                    &bounds::MAX_RECORDS_PER_PARTITION,
                )
            })
            .transpose()?;
        Ok(KafkaSourceConfig {
            brokers: brokers.get_ref().clone(),
            topics,
            starting_offsets: self.starting_offsets(spec)?,
            max_records_per_partition,
            rate: RateConfig {
                batch_interval: self.interval,
                backpressure: spec
                    .backpressure
                    .as_ref()
                    .is_some_and(|backpressure| *backpressure.get_ref()),
                initial_rate: spec
                    .initial_rate
                    .as_ref()
                    .map(|rate| self.count(rate, "initial_rate", &bounds::RATE))
                    .transpose()?,
                max_rate: spec
                    .max_rate
                    .as_ref()
                    .map(|rate| self.count(rate, "max_rate", &bounds::RATE))
                    .transpose()?,
            },
            value_format,
            key_format,
            metadata: spec
                .metadata
                .as_ref()
                .is_some_and(|metadata| *metadata.get_ref()),
            group_id: spec.group_id.as_ref().map_or_else(
                || format!("sluice-{}", self.job),
                |group| group.get_ref().clone(),
            ),
            properties: properties(&spec.properties),
            on_decode_error,
            allowed_brokers: None,
        })
    }

    /// `starting_offsets`: `"earliest"`, `"latest"`, `{ timestamp = MS }`, or
    /// `{ topic = { "partition" = offset, ... }, ... }`.
    fn starting_offsets(&self, spec: &SourceSpec) -> Result<StartingOffsets> {
        let Some(field) = &spec.starting_offsets else {
            return Ok(StartingOffsets::Earliest);
        };
        let hint = "write \"earliest\", \"latest\", { timestamp = MILLISECONDS } or { TOPIC = { \"PARTITION\" = OFFSET } }";
        let wrong = |what: String| self.error(Some(field.span()), what, hint);
        match field.get_ref() {
            toml::Value::String(name) if name == "earliest" => Ok(StartingOffsets::Earliest),
            toml::Value::String(name) if name == "latest" => Ok(StartingOffsets::Latest),
            toml::Value::Table(table) if table.len() == 1 && table.contains_key("timestamp") => {
                match table["timestamp"] {
                    toml::Value::Integer(at) if at >= 0 => Ok(StartingOffsets::Timestamp(at)),
                    _ => Err(wrong(
                        "`starting_offsets.timestamp` is not milliseconds since the epoch".into(),
                    )),
                }
            }
            toml::Value::Table(table) => {
                let mut offsets = BTreeMap::new();
                for (topic, partitions) in table {
                    let toml::Value::Table(partitions) = partitions else {
                        return Err(wrong(format!(
                            "`starting_offsets.{topic}` is not a table of partition offsets"
                        )));
                    };
                    let mut by_partition = BTreeMap::new();
                    for (partition, offset) in partitions {
                        match (partition.parse::<i32>(), offset) {
                            (Ok(partition), toml::Value::Integer(offset))
                                if partition >= 0 && *offset >= 0 =>
                            {
                                by_partition.insert(partition, *offset);
                            }
                            _ => {
                                return Err(wrong(format!(
                                    "`starting_offsets.{topic}.{partition}` is not a partition number with an offset ≥ 0"
                                )));
                            }
                        }
                    }
                    offsets.insert(topic.clone(), by_partition);
                }
                Ok(StartingOffsets::Offsets(offsets))
            }
            other => Err(wrong(format!(
                "`starting_offsets` = {other} is not a starting position"
            ))),
        }
    }

    pub(super) fn kafka_sink(&self, spec: &SinkSpec) -> Result<KafkaSinkConfig> {
        let what = "a kafka sink";
        let brokers = self.required(&spec.brokers, &spec.kind, "brokers", what)?;
        let topic = self.required(&spec.topic, &spec.kind, "topic", what)?;
        let format = self
            .choice(
                &spec.format,
                "kafka sink format",
                &[("string", Format::String), ("json", Format::Json)],
            )?
            .unwrap_or(Format::String);
        let delivery = self
            .choice(
                &spec.delivery,
                "delivery",
                &[
                    ("exactly_once", Delivery::ExactlyOnce),
                    ("at_least_once", Delivery::AtLeastOnce),
                ],
            )?
            .unwrap_or(Delivery::ExactlyOnce);
        if delivery == Delivery::ExactlyOnce && self.checkpoint_dir.is_none() {
            return Err(self.error(
                Some(span(&spec.delivery).unwrap_or_else(|| spec.kind.span())),
                "an exactly-once kafka sink needs the job's `[checkpoint]`: it keeps the offsets it wrote there, to write a re-run batch's missing records only",
                "add a `[checkpoint]` table with `dir = \"checkpoints/<job name>\"`, or set `delivery = \"at_least_once\"`",
            ));
        }
        Ok(KafkaSinkConfig {
            brokers: brokers.get_ref().clone(),
            topic: topic.get_ref().clone(),
            format,
            pairs: spec.pairs.as_ref().is_some_and(|pairs| *pairs.get_ref()),
            delivery,
            properties: properties(&spec.properties),
            checkpoint: self.checkpoint_dir.clone(),
            allowed_brokers: None,
        })
    }
}
