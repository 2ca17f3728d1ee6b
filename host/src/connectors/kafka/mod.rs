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

use anyhow::{Result, bail};
use rdkafka::metadata::Metadata;

/// Refuses a cluster whose metadata advertises a broker that `allowed` (a served job's
/// `allowed_hosts`) does not list: its client would connect to that broker next, reaching
/// past what the server allows. `what` names the source or sink.
fn check_advertised(what: &str, metadata: &Metadata, allowed: Option<&[String]>) -> Result<()> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    let advertised = metadata
        .brokers()
        .iter()
        .map(|broker| format!("{}:{}", broker.host(), broker.port()));
    check_listed(what, advertised, allowed)
}

/// Refuses the first of `advertised` that `allowed` does not list.
fn check_listed(
    what: &str,
    mut advertised: impl Iterator<Item = String>,
    allowed: &[String],
) -> Result<()> {
    if let Some(address) = advertised.find(|address| !allowed.contains(address)) {
        bail!(
            "{what}: the Kafka cluster advertises broker {address}, which the server does not \
             allow (allowed: {}); the client would connect to it: ask the operator to add it \
             to `allowed_hosts`, or have the brokers advertise allowed addresses",
            allowed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_advertised_brokers_pass() {
        let allowed = ["127.0.0.1:9092".to_owned(), "kafka:9093".to_owned()];
        let listed = |addresses: &[&str]| {
            check_listed(
                "source `k`",
                addresses.iter().map(|address| address.to_string()),
                &allowed,
            )
        };
        assert!(listed(&["kafka:9093", "127.0.0.1:9092"]).is_ok());
        let refused = listed(&["kafka:9093", "localhost:9092"])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("source `k`: the Kafka cluster advertises broker localhost:9092")
                && refused.contains("allowed: 127.0.0.1:9092, kafka:9093"),
            "{refused}"
        );
    }
}
