//! `sluice serve`: the server, until SIGTERM, SIGINT or SIGHUP; then every job stops
//! (within ten seconds) and the process exits 0. Running jobs resume at the next start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use std::sync::Arc;

use sluice::server::logs::JobLogs;
use sluice::server::{self, ServeOptions, ServerConfig};

use super::run::StopSignals;

pub fn serve(
    listen: SocketAddr,
    data: PathBuf,
    config: Option<&Path>,
    logs: Arc<JobLogs>,
) -> Result<ExitCode> {
    let config = match config {
        Some(path) => ServerConfig::load(path)?,
        None => ServerConfig::default(),
    };
    let options = ServeOptions {
        listen,
        data,
        config,
        logs,
    };
    let tokio = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    tokio.block_on(async {
        let mut signals = StopSignals::listen()?;
        let shutdown = async move {
            let signal = signals.next().await;
            tracing::info!("{}: stopping the server", signal.name);
        };
        server::serve(
            options,
            |token, path| {
                println!("admin token: {token}");
                tracing::info!(
                    "a new admin token was made and written to {} (mode 0600): it is shown \
                     only this once",
                    path.display()
                );
            },
            shutdown,
        )
        .await
    })?;
    // A job's receiver may be blocked on a thread of its own: do not wait for it.
    tokio.shutdown_background();
    Ok(ExitCode::SUCCESS)
}
