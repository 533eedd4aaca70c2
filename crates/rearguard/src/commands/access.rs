//! `rearguard token ...` and `rearguard audit`: who may use the API, and what was done.

use std::path::Path;

use super::Workspace;
use super::incident::since_ms;
use crate::cli::{AuditArgs, RoleArg, TokenAction};
use crate::clock::rfc3339;
use crate::ledger::Role;
use crate::{Outcome, ops};

pub async fn token(config_path: &Path, action: TokenAction) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open(config_path).await?;
    let actor = ops::Actor::cli();
    match action {
        TokenAction::Create { name, role, json } => {
            let role = match role {
                RoleArg::Viewer => Role::Viewer,
                RoleArg::Operator => Role::Operator,
                RoleArg::Admin => Role::Admin,
            };
            let created = ops::create_token(&workspace, &actor, &name, role).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": created.token.expose(), "record": created.record})
                );
            } else {
                crate::say!(
                    "token {:?} ({}) created; it is shown this once, keep it in a secret store:",
                    name,
                    role.as_str()
                );
                println!("{}", created.token.expose());
            }
        }
        TokenAction::List { json } => {
            let tokens = workspace.ledger.tokens().await?;
            if json {
                println!("{}", serde_json::to_string(&tokens)?);
                return Ok(Outcome::Success);
            }
            let mut table = super::output::table(["name", "role", "created", "by", "revoked"]);
            for t in &tokens {
                table.add_row([
                    t.name.clone(),
                    t.role.as_str().into(),
                    rfc3339(t.created_at),
                    t.created_by.clone(),
                    t.revoked_at.map_or_else(|| "-".into(), rfc3339),
                ]);
            }
            println!("{table}");
        }
        TokenAction::Revoke { name } => {
            ops::revoke_token(&workspace, &actor, &name).await?;
            println!("token {name:?} revoked");
        }
    }
    Ok(Outcome::Success)
}

pub async fn audit(config_path: &Path, args: AuditArgs) -> anyhow::Result<Outcome> {
    let workspace = Workspace::open(config_path).await?;
    let entries = workspace
        .ledger
        .audit_log(since_ms(&workspace, &args.since)?)
        .await?;
    if args.json {
        println!("{}", serde_json::to_string(&entries)?);
        return Ok(Outcome::Success);
    }
    let mut table = super::output::table([
        "at", "actor", "source", "action", "target", "outcome", "detail",
    ]);
    for e in &entries {
        table.add_row([
            rfc3339(e.at),
            e.actor.clone(),
            e.source.clone(),
            e.action.as_str().into(),
            e.target.clone(),
            e.outcome.as_str().into(),
            e.detail.clone(),
        ]);
    }
    println!("{table}");
    Ok(Outcome::Success)
}
