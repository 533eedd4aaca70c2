//! The `rearguard` binary: parse the command line, run, map the outcome to an exit code.

use clap::Parser;

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
