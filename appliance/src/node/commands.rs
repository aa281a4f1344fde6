//! `appliance set`: run-time changes to a running node over a unix socket
//! in its state directory (mode 0600: only the daemon's user may change its
//! routing). One JSON request per connection, one JSON answer.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use causeway_mesh::ExitNodeChoice;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// The largest request read from the socket.
const MAX_REQUEST: u64 = 4096;

/// A change asked for on the command socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    /// The exit node: a name, id or tailnet address, `auto` or `none`.
    pub exit_node: String,
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAnswer {
    /// What went wrong, if anything; nothing changed then.
    pub error: Option<String>,
    /// The exit node in effect afterwards, as `appliance status` shows it.
    pub exit_node: Option<super::status::ExitNodeStatus>,
}

/// A checked request on its way to the node, with where to answer.
pub type Pending = (ExitNodeChoice, oneshot::Sender<SetAnswer>);

/// Answers requests on `path` until aborted, handing checked ones to the
/// node through `requests`.
pub async fn serve(path: PathBuf, requests: mpsc::Sender<Pending>) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("binding command socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting command socket {}", path.display()))?;
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("accepting on the command socket")?;
        if let Err(e) = answer(stream, &requests).await {
            tracing::debug!(error = %format!("{e:#}"), "command client");
        }
    }
}

async fn answer(mut stream: UnixStream, requests: &mpsc::Sender<Pending>) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    (&mut stream)
        .take(MAX_REQUEST)
        .read_to_end(&mut bytes)
        .await
        .context("reading a command")?;
    let refused = |error: String| SetAnswer {
        error: Some(error),
        exit_node: None,
    };
    let answer = match serde_json::from_slice::<SetRequest>(&bytes) {
        Err(e) => refused(format!("command: {e}")),
        Ok(request) => match request.exit_node.parse::<ExitNodeChoice>() {
            Err(e) => refused(e.to_string()),
            Ok(choice) => {
                let (reply, answered) = oneshot::channel();
                if requests.send((choice, reply)).await.is_err() {
                    refused("the node is stopping".to_owned())
                } else {
                    answered
                        .await
                        .unwrap_or_else(|_| refused("the node is stopping".to_owned()))
                }
            }
        },
    };
    let json = serde_json::to_vec(&answer).context("serialising the answer")?;
    stream.write_all(&json).await.context("answering")?;
    Ok(())
}

/// Sends `request` to the daemon whose state directory is `state_dir`.
pub async fn send(state_dir: &Path, request: &SetRequest) -> anyhow::Result<SetAnswer> {
    let path = crate::state::command_socket(state_dir);
    let mut stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "connecting to {} (is `appliance run` running with this state_dir, as this user?)",
            path.display()
        )
    })?;
    let json = serde_json::to_vec(request).context("serialising the command")?;
    stream
        .write_all(&json)
        .await
        .context("sending the command")?;
    stream.shutdown().await.context("sending the command")?;
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .await
        .context("reading the answer")?;
    serde_json::from_slice(&bytes).context("parsing the answer")
}
