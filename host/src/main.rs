//! `sluice`: run, check and inspect Sluice jobs and UDFs.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
