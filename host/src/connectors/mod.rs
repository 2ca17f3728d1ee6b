//! Connectors to external systems: sources and sinks that speak another system's
//! protocol rather than reading files or sockets.

pub mod kafka;
