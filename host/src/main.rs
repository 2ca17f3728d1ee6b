//! `sluice`: run, check and inspect Sluice jobs and UDFs.

mod cli;

/// Batches are large and short-lived: glibc's allocator hands such blocks back to the
/// kernel on free and page-faults them in again for the next batch (measured: the engine
/// alone ran 5x slower with it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
