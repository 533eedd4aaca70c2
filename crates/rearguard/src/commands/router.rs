//! `rearguard router`: the built-in router of one app as its own process. The guard starts
//! it and drives it over its control socket; it outlives the guard, so restarting or
//! upgrading the guard drops no request.

use std::collections::BTreeMap;

use super::stop_on_signals;
use crate::cli::RouterArgs;
use crate::router::{Router, control};
use crate::{Outcome, UsageError, clock, names};

pub async fn run(args: RouterArgs) -> anyhow::Result<Outcome> {
    names::check_name(&args.app).map_err(|e| UsageError(format!("app name {e}")))?;
    let listen: BTreeMap<_, _> = args.listen.into_iter().collect();
    let router = Router::start(&args.app, &listen, clock::system())
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let control = control::listen(&args.control).map_err(|e| {
        UsageError(format!(
            "cannot create the control socket {}: {e}",
            args.control.display()
        ))
    })?;
    // Stopped by the guard (a Stop request) or a signal.
    let stop = stop_on_signals();
    tracing::info!(app = %args.app, "router serving");
    control::serve(control, router.clone(), stop).await;
    router.shutdown();
    let _ = std::fs::remove_file(&args.control);
    Ok(Outcome::Success)
}
