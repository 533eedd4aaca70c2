//! API tokens: created (shown once), stored hashed, checked, revoked.

use sha2::{Digest, Sha256};

use super::{Actor, OpsError, Result, Workspace};
use crate::ledger::AuditAction;
use crate::ledger::{Role, TokenRecord};

/// Prefix of every token, so a leaked one is recognisable (secret scanners, `redact`).
pub const TOKEN_PREFIX: &str = "rgt_";

/// A token just created: the only time it is seen whole.
pub struct NewToken {
    pub record: TokenRecord,
    pub token: crate::secret::Secret,
}

/// SHA-256 of `text`, in hex: how tokens are stored, and what derived values are made of.
pub fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a token named `name` with `role`.
pub async fn create_token(
    workspace: &Workspace,
    actor: &Actor,
    name: &str,
    role: Role,
) -> Result<NewToken> {
    let write = async {
        crate::names::check_name(name)
            .map_err(|e| OpsError::Invalid(format!("invalid token name: {e}")))?;
        let mut random = [0u8; 32];
        getrandom::fill(&mut random)
            .map_err(|e| OpsError::Internal(anyhow::anyhow!("no randomness: {e}")))?;
        let token: String = std::iter::once(TOKEN_PREFIX.to_string())
            .chain(random.iter().map(|b| format!("{b:02x}")))
            .collect();
        let record = workspace
            .ledger
            .create_token(name, role, &hash(&token), &actor.name)
            .await?
            .ok_or_else(|| {
                OpsError::Conflict(format!(
                    "a token named {name:?} exists already (revoked ones keep their name)"
                ))
            })?;
        Ok(NewToken {
            record,
            token: crate::secret::Secret(token),
        })
    };
    workspace
        .audited(actor, AuditAction::TokenCreate, name, role.as_str(), write)
        .await
}

/// Revokes the token named `name`.
pub async fn revoke_token(workspace: &Workspace, actor: &Actor, name: &str) -> Result<()> {
    let write = async {
        if workspace.ledger.revoke_token(name).await? {
            Ok(())
        } else {
            Err(OpsError::NotFound(format!("no live token named {name:?}")))
        }
    };
    workspace
        .audited(actor, AuditAction::TokenRevoke, name, "", write)
        .await
}

/// The live token `presented` is, if any. Lookup is by hash, so no token is compared byte
/// by byte in time that depends on its content.
pub async fn authenticate(workspace: &Workspace, presented: &str) -> Result<Option<TokenRecord>> {
    if !presented.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    Ok(workspace.ledger.token_by_hash(&hash(presented)).await?)
}
