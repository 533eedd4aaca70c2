//! The `rearguard` binary: parse the command line, run, map the outcome to an exit code.

use clap::Parser;

/// mimalloc instead of glibc's malloc: a guard of thousands of apps holds a few hundred MB
/// live but glibc kept about four times that resident (freed memory stays in per-thread
/// arenas), and malloc was a tenth of the guard's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Die quietly on a closed pipe (`rearguard ... | head`), as command-line tools do.
    // SAFETY: called first, before any thread exists; SIG_DFL is always a valid handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    // One TLS provider for the whole process (ring), before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = rearguard::cli::Cli::parse();
    rearguard::run(cli)
}
