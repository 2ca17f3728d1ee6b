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

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::client::{Client, ClientContext};
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaType;

/// Checks, before a served job's consumer or producer is made (which connects to the
/// cluster's brokers at once), that the cluster at `client`'s bootstrap servers
/// advertises only brokers `allowed` lists (the server's `allowed_hosts`). The check's own
/// client cannot connect anywhere else: librdkafka's connect callback refuses every other
/// `host:port` before a socket connects. `what` names the source or sink; without
/// `allowed` (a job of `sluice run`), anything goes.
fn check_brokers(
    what: &str,
    client: &ClientConfig,
    allowed: Option<&[String]>,
    timeout: Duration,
) -> Result<()> {
    let Some(allowed) = allowed else {
        return Ok(());
    };
    let brokers = client.get("bootstrap.servers").unwrap_or_default();
    let native = client
        .create_native_config()
        .with_context(|| format!("{what} cannot configure a Kafka client for {brokers}"))?;
    // SAFETY: the configuration is valid and not yet used; the callback is a plain
    // function, and `connect_allowed` reads the opaque librdkafka passes it as the
    // `Guard` that `Client::new` makes the configuration's opaque.
    unsafe { rdkafka_sys::rd_kafka_conf_set_connect_cb(native.ptr(), Some(connect_allowed)) };
    let guard = Guard {
        allowed: allowed.to_vec(),
        refused: Mutex::new(None),
    };
    let client = Client::new(client, native, RDKafkaType::RD_KAFKA_PRODUCER, guard)
        .with_context(|| format!("{what} cannot create a Kafka client for {brokers}"))?;
    let metadata = client.fetch_metadata(None, timeout);
    let refused = client
        .context()
        .refused
        .lock()
        .expect("refused broker poisoned")
        .take();
    if let Some(address) = refused {
        return Err(refusal(what, &address, allowed));
    }
    let metadata =
        metadata.with_context(|| format!("{what} cannot read the brokers of {brokers}"))?;
    check_advertised(what, &metadata, Some(allowed))
}

/// The client context of [`check_brokers`]: the brokers it may connect to, and the first
/// it was refused.
struct Guard {
    allowed: Vec<String>,
    refused: Mutex<Option<String>>,
}

impl ClientContext for Guard {}

/// librdkafka's connect callback of a [`Guard`]'s client: connects socket `socket` to
/// `address` only if the broker `node` (its `host:port`) is allowed, as librdkafka's own
/// connect does (non-blocking: in progress is success); otherwise refuses, connecting
/// nothing.
unsafe extern "C" fn connect_allowed(
    socket: c_int,
    address: *const libc::sockaddr,
    length: c_int,
    node: *const c_char,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: rdkafka 0.37's `Client::new` sets the configuration's opaque to its
    // context, a `Guard` that outlives the client; `node` is librdkafka's C string.
    let (guard, node) = unsafe {
        (
            &*(opaque as *const Guard),
            CStr::from_ptr(node).to_string_lossy(),
        )
    };
    if !guard.allowed.iter().any(|allowed| *allowed == node) {
        guard
            .refused
            .lock()
            .expect("refused broker poisoned")
            .get_or_insert_with(|| node.into_owned());
        return libc::ECONNREFUSED;
    }
    // SAFETY: librdkafka passes a socket and an address of `length` bytes.
    if unsafe { libc::connect(socket, address, length as libc::socklen_t) } == 0 {
        return 0;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EINPROGRESS) => 0,
        Some(error) => error,
        None => libc::ECONNREFUSED,
    }
}

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
    match advertised.find(|address| !allowed.contains(address)) {
        Some(address) => Err(refusal(what, &address, allowed)),
        None => Ok(()),
    }
}

/// The refusal of broker `address`, which `allowed` does not list.
fn refusal(what: &str, address: &str, allowed: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: the Kafka cluster advertises broker {address}, which the server does not \
         allow (allowed: {}); no connection to it was made: ask the operator to add it to \
         `allowed_hosts`, or have the brokers advertise allowed addresses",
        allowed.join(", ")
    )
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
