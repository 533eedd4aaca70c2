//! `rearguard guard`: guard every configured app (or those named) until stopped. SIGTERM or
//! Ctrl-C stops it and the apps; SIGHUP reloads the config by executing the guard again in
//! place (same process, so the lease, the app's processes and its router carry on and no
//! request is dropped). Under a service manager (systemd's `Type=notify`), it says when it
//! is ready, reloading and stopping.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sd_notify::NotifyState;

use super::{Workspace, stop_on_signals};
use crate::cli::GuardArgs;
use crate::guard::Ending;
use crate::{Outcome, UsageError, config};

pub async fn run(config_path: &Path, args: GuardArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open_to_guard(config_path).await?;
    let apps: Vec<String> = if args.apps.is_empty() {
        workspace.config.apps.keys().cloned().collect()
    } else {
        args.apps
    };
    for app in &apps {
        workspace.check_app(app)?;
    }
    let ending = Ending {
        stop: stop_on_signals(),
        detach: reload_on_hangup(config_path.to_path_buf()),
    };
    let context = workspace.guard_context(None)?;
    if let Some(address) = args.listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| UsageError(format!("cannot listen on {address}: {e}")))?;
        let server_workspace = std::sync::Arc::new(Workspace::open(config_path).await?);
        let (stop, detach) = (ending.stop.clone(), ending.detach.clone());
        let ended = async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = detach.cancelled() => {}
            }
        };
        let metrics = Some(context.metrics.clone());
        tokio::spawn(crate::server::serve(
            server_workspace,
            listener,
            metrics,
            ended,
        ));
        crate::say!("rearguard: serving http://{address}/api/v1 and /dashboard");
    }
    crate::say!("rearguard: guarding {} (Ctrl-C to stop)", apps.join(", "));
    let status = format!("guarding {}", apps.join(", "));
    let outcome = crate::guard::run(context, apps, ending.clone(), || {
        tell_service_manager(&[NotifyState::Ready, NotifyState::Status(&status)]);
    })
    .await;
    if ending.detach.is_cancelled() && !ending.stop.is_cancelled() {
        outcome?;
        return execute_again();
    }
    tell_service_manager(&[NotifyState::Stopping]);
    outcome?;
    crate::say!("rearguard: stopped");
    Ok(Outcome::Success)
}

/// Cancelled on SIGHUP once the config on disk is good: a config with problems is refused
/// (logged) and the running one kept.
fn reload_on_hangup(config_path: std::path::PathBuf) -> tokio_util::sync::CancellationToken {
    let reload = tokio_util::sync::CancellationToken::new();
    let token = reload.clone();
    tokio::spawn(async move {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hangup.recv().await.is_some() {
            match config::load(&config_path, config::Needs::Everything) {
                Ok(_) => {
                    tracing::warn!("SIGHUP: reloading the config");
                    token.cancel();
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: the config has problems; keeping the one running");
                }
            }
        }
    });
    reload
}

/// Replaces this process with a new run of the guard (the same arguments, the program's
/// current file: after an upgrade, the new one). Returns only if that fails.
fn execute_again() -> anyhow::Result<Outcome> {
    tell_service_manager(&[NotifyState::Reloading]);
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        tell_service_manager(&[now]);
    }
    let program = crate::identity::this_program()?;
    let program = CString::new(program.as_os_str().as_bytes())?;
    let args = std::env::args_os()
        .map(|arg| CString::new(arg.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let error = nix::unistd::execv(&program, &args).unwrap_err();
    anyhow::bail!("cannot execute the guard again: {error}")
}

/// Tells systemd (or anything speaking its notify protocol on NOTIFY_SOCKET) how the guard
/// is; without NOTIFY_SOCKET nothing is sent.
fn tell_service_manager(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot tell the service manager");
    }
}
