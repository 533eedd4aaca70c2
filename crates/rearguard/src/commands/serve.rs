//! `rearguard serve`: the HTTP API over the config's ledger, until Ctrl-C or SIGTERM.

use std::path::Path;
use std::sync::Arc;

use super::{Workspace, stop_on_signals};
use crate::cli::ServeArgs;
use crate::{Outcome, UsageError};

pub async fn run(config_path: &Path, args: ServeArgs) -> anyhow::Result<Outcome> {
    let workspace = Arc::new(Workspace::open(config_path).await?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| UsageError(format!("cannot listen on {}: {e}", args.listen)))?;
    let address = listener.local_addr()?;
    if workspace
        .ledger
        .tokens()
        .await?
        .iter()
        .all(|t| t.revoked_at.is_some())
    {
        crate::say!(
            "rearguard: no live API token yet; create one with `rearguard token create --name NAME --role operator`"
        );
    }
    crate::say!("rearguard: serving http://{address}/api/v1 (Ctrl-C to stop)");
    let stop = stop_on_signals();
    crate::server::serve(
        workspace,
        listener,
        None,
        async move { stop.cancelled().await },
    )
    .await?;
    crate::say!("rearguard: stopped");
    Ok(Outcome::Success)
}
