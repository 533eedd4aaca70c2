//! The router process's control channel: the guard tells it where traffic goes and takes
//! its per-second counts, over a unix socket only the guard's user may open (mode 0600).
//! One JSON request per line, one JSON answer per line. Both ends live here, so the
//! protocol is written once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::Router;
use crate::signals::Reading;
use crate::traffic::Routes;

/// Bumped when requests or answers change: a guard replaces a router speaking another.
pub const PROTOCOL: u32 = 1;

/// A request answers within this long, or the router is taken for dead.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello,
    Route { routes: Routes },
    Take,
    Stop,
}

/// Who the router is and what it does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    pub pid: u32,
    pub app: String,
    pub listen: BTreeMap<String, SocketAddr>,
    /// The versions it routes to now (none until a guard has told it).
    pub routed: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    Hello(Hello),
    Done,
    Seconds { seconds: Vec<Reading> },
    Error { message: String },
}

/// Serves the control socket until `stop` (a `Stop` request cancels it too).
pub async fn serve(listener: UnixListener, router: Arc<Router>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    continue;
                }
            },
        };
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = match serde_json::from_str::<Request>(&line) {
                    Ok(request) => answer(&router, request, &stop),
                    Err(e) => Answer::Error {
                        message: format!("bad request: {e}"),
                    },
                };
                let mut text = serde_json::to_string(&answer).unwrap_or_default();
                text.push('\n');
                if write.write_all(text.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn answer(router: &Router, request: Request, stop: &CancellationToken) -> Answer {
    match request {
        Request::Hello => Answer::Hello(Hello {
            protocol: PROTOCOL,
            pid: std::process::id(),
            app: router.app().to_string(),
            listen: router.addresses().clone(),
            routed: router.routed_versions(),
        }),
        Request::Route { routes } => {
            router.set_routes(&routes);
            Answer::Done
        }
        Request::Take => Answer::Seconds {
            seconds: router.take_seconds(),
        },
        Request::Stop => {
            stop.cancel();
            Answer::Done
        }
    }
}

/// Creates the control socket at `path`, readable and writable by this user only.
pub fn listen(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a router that died is in the way; a live one answered the guard
    // before it started this one.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(listener)
}

/// The guard's end: one connection, opened on first use and again after a failure.
pub struct Client {
    path: PathBuf,
    connection: tokio::sync::Mutex<Option<BufReader<UnixStream>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the router at {path} does not answer: {why}")]
pub struct ClientError {
    pub path: String,
    pub why: String,
}

impl Client {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request` and waits (bounded) for its answer.
    pub async fn call(&self, request: &Request) -> Result<Answer, ClientError> {
        let mut connection = self.connection.lock().await;
        let result = tokio::time::timeout(ANSWER_WITHIN, async {
            if connection.is_none() {
                *connection = Some(BufReader::new(UnixStream::connect(&self.path).await?));
            }
            let stream = connection.as_mut().expect("connected above");
            let mut text = serde_json::to_string(request).map_err(std::io::Error::other)?;
            text.push('\n');
            stream.get_mut().write_all(text.as_bytes()).await?;
            let mut line = String::new();
            if stream.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the router closed the connection",
                ));
            }
            serde_json::from_str::<Answer>(&line).map_err(std::io::Error::other)
        })
        .await;
        let failed = |why: String| ClientError {
            path: self.path.display().to_string(),
            why,
        };
        match result {
            Ok(Ok(Answer::Error { message })) => Err(failed(message)),
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                *connection = None;
                Err(failed(e.to_string()))
            }
            Err(_) => {
                *connection = None;
                Err(failed(format!("no answer within {ANSWER_WITHIN:?}")))
            }
        }
    }

    pub async fn hello(&self) -> Result<Hello, ClientError> {
        match self.call(&Request::Hello).await? {
            Answer::Hello(hello) => Ok(hello),
            other => Err(self.unexpected(other)),
        }
    }

    pub async fn take(&self) -> Result<Vec<Reading>, ClientError> {
        match self.call(&Request::Take).await? {
            Answer::Seconds { seconds } => Ok(seconds),
            other => Err(self.unexpected(other)),
        }
    }

    fn unexpected(&self, answer: Answer) -> ClientError {
        ClientError {
            path: self.path.display().to_string(),
            why: format!("unexpected answer {answer:?}"),
        }
    }
}
