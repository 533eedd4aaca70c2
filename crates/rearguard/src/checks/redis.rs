//! Redis check: the server answers PING (after AUTH when a password is set).
//!
//! Two commands of the protocol's inline form, written by hand: the redis crate would add a
//! connection manager and its dependencies for a request and a one-line answer.

use std::net::SocketAddr;

use rearguard_judge::Span;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{Check, Health, Subject, default_failures, default_timeout};
use crate::config::Flaw;
use crate::secret::Secret;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisCheck {
    pub name: String,
    /// The server, `IP:PORT`.
    pub address: SocketAddr,
    /// Write it as `${NAME}`.
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default = "default_timeout")]
    pub timeout: Span,
    #[serde(default = "default_failures")]
    pub failures: u32,
}

impl RedisCheck {
    async fn ping(&self) -> Result<String, String> {
        let stream = tokio::net::TcpStream::connect(self.address)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.address))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut ask = async |command: String| -> Result<String, String> {
            write
                .write_all(command.as_bytes())
                .await
                .map_err(|e| format!("cannot write to {}: {e}", self.address))?;
            lines
                .next_line()
                .await
                .map_err(|e| format!("cannot read from {}: {e}", self.address))?
                .ok_or_else(|| format!("{} closed the connection", self.address))
        };
        if let Some(password) = &self.password {
            // The bulk form, so a password holding spaces or quotes is sent as it is.
            let password = password.expose();
            let answer = ask(format!(
                "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n",
                password.len()
            ))
            .await?;
            if !answer.starts_with("+OK") {
                return Err(format!("AUTH refused: {}", answer.trim()));
            }
        }
        ask("PING\r\n".into()).await
    }
}

#[async_trait::async_trait]
impl Check for RedisCheck {
    common_check_methods!();

    fn problems(&self, _listening: &[String]) -> Vec<Flaw> {
        Vec::new()
    }

    async fn look(&self, _subject: &Subject<'_>) -> (Health, String) {
        match self.ping().await {
            Ok(answer) if answer.trim() == "+PONG" => {
                (Health::Pass, format!("{} answers PONG", self.address))
            }
            Ok(answer) => (
                Health::Fail,
                format!("{} answered {:?} to PING", self.address, answer.trim()),
            ),
            Err(why) => (Health::Fail, why),
        }
    }
}
