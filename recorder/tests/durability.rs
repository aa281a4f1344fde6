//! `kill -9` at any moment loses no acknowledged byte: the recorder runs as
//! a child process, is killed while a session is streaming, and restarted;
//! every acked byte must then reach storage.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{H2, Reply, recording};

/// The recorder binary on the port its config names, killed (SIGKILL) on drop.
struct Process {
    child: Child,
}

impl Process {
    fn start(config: &Path, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_causeway-recorder"))
            .arg("--config")
            .arg(config)
            .arg("--trust-claimed-node-ids")
            .env("RUST_LOG", "causeway_recorder=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the recorder binary starts");
        causeway_test_support::wait_listening(port, "the recorder", Duration::from_secs(10));
        Self { child }
    }

    /// SIGKILL, no chance to clean up.
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acked_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("recorder.toml");
    let port = causeway_test_support::free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut config = common::test_config(dir.path());
    config.ack_interval_ms = 100;
    config.listen = addr;
    std::fs::write(
        &config_path,
        toml::to_string(&config).expect("config serializes"),
    )
    .expect("write config");

    // Kill at three different depths into three sessions.
    let mut sessions = Vec::new();
    for (round, kill_after) in [(0, 1_000u64), (1, 50_000), (2, 200_000)] {
        let recorder = Process::start(&config_path, port);
        // About 5 MB: HTTP/2 flow control keeps at most the 1 MiB window
        // in flight past the acks, so the kill lands well before the end.
        let body = recording("nKILL", &format!("round{round}"), 120_000);
        let mut h2 = H2::connect(addr).await;
        let (_, mut up) = h2.post().await;
        let tx = up.body.take().expect("body");
        // The sender keeps writing in the background, so the kill lands mid-write.
        let sender = tokio::spawn({
            let body = body.clone();
            async move {
                for chunk in body.chunks(4096) {
                    if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let mut acked = 0;
        while acked < kill_after {
            match tokio::time::timeout(Duration::from_secs(10), up.next_reply()).await {
                Ok(Some(Reply::Ack(a))) => acked = a,
                other => panic!(
                    "round {round}: expected acks up to {kill_after}, got {other:?} at {acked}"
                ),
            }
        }
        recorder.kill9();
        sender.abort();
        assert!(
            acked < body.len() as u64,
            "round {round}: killed before the session ended"
        );
        sessions.push((
            format!("nKILL/20231114T221320Z-round{round}.cast"),
            body,
            acked,
        ));
    }

    // A restart finds the spool and uploads what it holds.
    let _recorder = Process::start(&config_path, port);
    let files = common::wait_stored(&dir.path().join("store"), sessions.len(), 20).await;
    for (key, body, acked) in sessions {
        let stored = files
            .get(&key)
            .unwrap_or_else(|| panic!("{key} not stored; have {:?}", files.keys()));
        assert!(
            stored.len() as u64 >= acked,
            "{key}: {} bytes stored but {acked} were acked",
            stored.len()
        );
        assert_eq!(
            &body[..stored.len()],
            stored.as_slice(),
            "{key}: stored bytes are a prefix of the sent ones"
        );
        assert!(
            stored.ends_with(b"\n"),
            "{key}: stored recording ends on a whole line"
        );
    }
    assert!(
        common::stored(&dir.path().join("spool")).is_empty(),
        "spool emptied after upload"
    );
}

#[test]
fn the_runner_refuses_to_file_by_claimed_node_ids_unless_told_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("recorder.toml");
    std::fs::write(&config, "this file is never read\n").expect("config");

    let out = Command::new(env!("CARGO_BIN_EXE_causeway-recorder"))
        .arg("--config")
        .arg(&config)
        .env_remove("CAUSEWAY_RECORDER_TRUST_CLAIMED_NODE_IDS")
        .output()
        .expect("the recorder binary runs");

    assert!(!out.status.success(), "it must not start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot tell which node sent a recording")
            && stderr.contains("--trust-claimed-node-ids"),
        "{stderr}"
    );
}
