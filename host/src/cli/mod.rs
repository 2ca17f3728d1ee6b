//! The command line: a thin layer over the library.

mod checkpoint;
mod client;
mod new;
mod run;
mod sdk;
mod serve;
mod status;
mod stderr;
mod udf;
mod udf_python;
mod udf_test;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use sluice::manifest::ManifestError;
use sluice::runtime::{Runtime, RuntimeConfig};
use sluice::server::logs::{JobLogLayer, JobLogs};
use stderr::Stderr;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Run stream-processing jobs whose functions are WebAssembly components."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run jobs until Ctrl-C, until their bounded sources are drained, or for N batches.
    /// Several manifests run side by side in one process, each job with its own checkpoint
    /// directory; the run ends when every job has ended, and a failed job (exit code 1)
    /// does not stop the others.
    Run {
        /// The job manifests (TOML).
        #[arg(required = true, value_name = "MANIFEST")]
        manifests: Vec<PathBuf>,
        /// Stop each job after this many batches.
        #[arg(long)]
        batches: Option<u64>,
        /// Start this stateful step (`stream/step`, as errors name it) with empty state
        /// instead of its checkpointed state: for a redeploy that changed or removed it.
        #[arg(long, value_name = "STEP")]
        fresh_state: Vec<String>,
        /// Go on when recovering from the checkpoint directory would lose batches (a
        /// damaged or missing log segment, no usable state checkpoint): without it the run
        /// refuses to start, saying which batches and why. The run then exits with code 3.
        #[arg(long)]
        accept_data_loss: bool,
        /// The host configuration: the instance pool, and tenants with their weights and
        /// quotas (without it, every job runs for tenant `default` with default quotas).
        #[arg(long, value_name = "HOST_TOML")]
        host_config: Option<PathBuf>,
        /// How to report progress: a live status line on a terminal, else log lines.
        #[arg(long, value_enum, default_value_t = LogFormat::Auto)]
        log: LogFormat,
        #[command(flatten)]
        ui: run::UiOptions,
    },
    /// Check a job manifest (and load its UDFs) without running it.
    Check {
        /// The job manifest (TOML).
        manifest: PathBuf,
    },
    /// Create a UDF crate that builds anywhere, with a job that runs its functions.
    New {
        /// The folder to create; its last component names the crate.
        path: PathBuf,
        /// The language of the functions.
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
    },
    /// Build, test and inspect UDF components.
    Udf {
        #[command(subcommand)]
        command: UdfCommand,
    },
    /// Print a shell completion script: `sluice completions bash > ~/.local/share/bash-completion/completions/sluice`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Look into a job's checkpoint directory.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// Run a server that tenants submit jobs to over HTTP, until SIGTERM or Ctrl-C
    /// (running jobs resume at the next start). See docs/serve.md.
    Serve {
        /// The address to listen on.
        #[arg(long, default_value = sluice::server::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Where the registry, components, files and checkpoints are kept.
        #[arg(long, default_value = sluice::server::DEFAULT_DATA)]
        data: PathBuf,
        /// The server configuration: the pool, default quotas, allowed hosts, restarts.
        #[arg(long, value_name = "SERVER_TOML")]
        config: Option<PathBuf>,
    },
    /// Submit a job to a server, uploading the local components its `[udfs]` name.
    Submit {
        /// The job manifest (TOML).
        manifest: PathBuf,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Replace a job running on a server at a batch boundary, keeping its state;
    /// uploads the local components its `[udfs]` name.
    Redeploy {
        /// The job manifest (TOML); its `name` is the job replaced.
        manifest: PathBuf,
        /// Start this stateful step (`stream/step`) with empty state instead of its
        /// checkpointed state (as `sluice run --fresh-state`).
        #[arg(long, value_name = "STEP")]
        fresh_state: Vec<String>,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Print a job's log lines from a server.
    Logs {
        /// The job's name.
        name: String,
        /// Go on printing lines as they come, until Ctrl-C.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// List the tenant's jobs on a server.
    Jobs {
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Show a job on a server: its state, failure and last batches.
    Job {
        /// The job's name.
        name: String,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Stop a job on a server after its batch in flight.
    Stop {
        /// The job's name.
        name: String,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Start a stopped or failed job on a server again, from its checkpoint.
    Start {
        /// The job's name.
        name: String,
        /// Go on when recovering would lose batches (as `sluice run --accept-data-loss`).
        #[arg(long)]
        accept_data_loss: bool,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Stop a job on a server and remove it with its checkpoints.
    Delete {
        /// The job's name.
        name: String,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Put, get and remove the tenant's files on a server (the files its jobs read and
    /// write; relative paths of its manifests start there).
    Files {
        #[command(subcommand)]
        command: FilesCommand,
    },
    /// Manage a server's tenants (with the admin token).
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
}

#[derive(Subcommand)]
enum FilesCommand {
    /// Upload a local file to PATH.
    Put {
        /// The local file.
        local: PathBuf,
        /// Where it goes, relative to the tenant's files.
        path: String,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Download the file at PATH (to standard output without LOCAL), or list a directory.
    Get {
        /// The file or directory, relative to the tenant's files.
        path: String,
        /// Where to write it.
        local: Option<PathBuf>,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Remove the file (or empty directory) at PATH.
    Rm {
        /// The file or directory, relative to the tenant's files.
        path: String,
        #[command(flatten)]
        remote: client::Remote,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its token (shown only once).
    Create {
        /// The tenant's name.
        name: String,
        #[command(flatten)]
        quotas: client::QuotaFlags,
        #[command(flatten)]
        remote: client::Remote,
    },
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Show the job, its last batches, each stateful step's state size and the
    /// component digests that produced it.
    Inspect {
        /// The checkpoint directory (`[checkpoint] dir` of the manifest).
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum UdfCommand {
    /// Compile a UDF crate (or workspace) to components, installing the wasm32-wasip2
    /// target if it is missing; or a Python UDF project (a folder holding udf.py) to a
    /// component, installing componentize-py if it is missing.
    Build {
        /// The crate's, workspace's or Python project's directory.
        path: PathBuf,
    },
    /// Run one function on sample input (JSON lines from a file or stdin) and print one
    /// JSON line per result; exits with 1 if a call failed. For map, flat_map and filter a
    /// line is one record; reduce: an array of values; fold: the accumulator then the
    /// values; update_state: {"values", "state"}; map_with_state: {"key", "values",
    /// "state", "timing_out", "batch_time_ms"}.
    Test {
        /// The function: `path/to/component.wasm#function`.
        function: String,
        /// The JSON lines file (`-`: standard input).
        #[arg(long, short, default_value = "-")]
        input: PathBuf,
        #[command(flatten)]
        limits: udf_test::LimitFlags,
    },
    /// List the functions a component exports and their kinds.
    Inspect {
        /// The component (.wasm).
        file: PathBuf,
    },
}

/// How `sluice run` reports.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// A status line on a terminal, text log lines otherwise.
    Auto,
    /// Text log lines.
    Text,
    /// JSON log lines.
    Json,
}

/// Exit code for a job or manifest that cannot run.
const INVALID: u8 = 2;

/// Exit code for a run that went on after recovery lost batches (`--accept-data-loss`).
const DATA_LOST: u8 = 3;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = match &cli.command {
        Command::Run { log, .. } => *log,
        _ => LogFormat::Text,
    };
    // The server files each job's log lines under the job.
    let job_logs = matches!(cli.command, Command::Serve { .. }).then(JobLogs::new);
    init_logging(log, job_logs.as_ref().map(JobLogs::layer));
    let outcome = match cli.command {
        Command::Run {
            manifests,
            batches,
            fresh_state,
            accept_data_loss,
            host_config,
            log,
            ui,
        } => run::run(
            &manifests,
            batches,
            host_config.as_deref(),
            &sluice::checkpoint::RecoveryOptions {
                fresh_state,
                accept_data_loss,
                ..Default::default()
            },
            log,
            &ui,
        ),
        Command::Checkpoint {
            command: CheckpointCommand::Inspect { dir },
        } => checkpoint::inspect(&dir),
        Command::Check { manifest } => check(&manifest),
        Command::Serve {
            listen,
            data,
            config,
        } => serve::serve(
            listen,
            data,
            config.as_deref(),
            job_logs.expect("made for serve"),
        ),
        Command::Submit { manifest, remote } => client::submit(&remote, &manifest),
        Command::Redeploy {
            manifest,
            fresh_state,
            remote,
        } => client::redeploy(&remote, &manifest, &fresh_state),
        Command::Logs {
            name,
            follow,
            remote,
        } => client::logs(&remote, &name, follow),
        Command::Jobs { remote } => client::jobs(&remote),
        Command::Job { name, remote } => client::job(&remote, &name),
        Command::Stop { name, remote } => client::stop(&remote, &name),
        Command::Start {
            name,
            accept_data_loss,
            remote,
        } => client::start(&remote, &name, accept_data_loss),
        Command::Delete { name, remote } => client::delete(&remote, &name),
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    quotas,
                    remote,
                },
        } => client::create_tenant(&remote, &name, &quotas),
        Command::Files { command } => match command {
            FilesCommand::Put {
                local,
                path,
                remote,
            } => client::put_file(&remote, &local, &path),
            FilesCommand::Get {
                path,
                local,
                remote,
            } => client::get_file(&remote, &path, local.as_deref()),
            FilesCommand::Rm { path, remote } => client::remove_file(&remote, &path),
        },
        Command::New { path, lang } => new::new(&path, lang),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "sluice", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Udf {
            command: UdfCommand::Build { path },
        } => udf::build(&path),
        Command::Udf {
            command: UdfCommand::Inspect { file },
        } => udf::inspect(&file),
        Command::Udf {
            command:
                UdfCommand::Test {
                    function,
                    input,
                    limits,
                },
        } => udf_test::test(&function, &input, &limits),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            if let Some(manifest) = error.downcast_ref::<ManifestError>() {
                let _ = writeln!(Stderr, "error: {manifest}");
                return ExitCode::from(INVALID);
            }
            let _ = writeln!(Stderr, "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, job_logs: Option<JobLogLayer>) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == LogFormat::Json {
        builder.json().finish().with(job_logs).init();
    } else {
        builder.finish().with(job_logs).init();
    }
}

fn check(manifest: &std::path::Path) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let config = sluice::manifest::load(manifest, &runtime)?;
    println!(
        "{}: job `{}` is valid: {} source(s), {} stream(s), {} sink(s), batch interval {} ms",
        manifest.display(),
        config.name,
        config.sources.len(),
        config.streams.len(),
        config.sinks.len(),
        config.batch_interval.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}
