//! Kafka: a source replayable by exact offset ranges and an exactly-once sink, through
//! librdkafka. Any Kafka-compatible broker works (Apache Kafka, Redpanda, Tansu, ...):
//! point a job's `brokers` at it, and pass client settings (SASL, TLS) in `properties`.
//!
//! Offsets are never taken from the broker's answer to "latest" (ListOffsets): Tansu 0.6
//! answers it wrongly after a produce of several records (the last record batch's base
//! offset + 1). The source cuts at what it has fetched and the sink's recovery fetches
//! until a fetch comes back empty, so neither depends on it.

pub mod config;
pub mod decode;
pub mod partitioner;
pub mod sink;
pub mod source;

pub use config::{
    Delivery, Format, KafkaSinkConfig, KafkaSourceConfig, OnDecodeError, StartingOffsets, Topics,
};
pub use sink::KafkaSink;
pub use source::KafkaSource;
