//! `appliance record` against a real recorder served in this process, on
//! loopback: a command's output lands intact and its exit status passes
//! through; with `--enforce` a session that cannot be recorded does not
//! run, and one whose acks stop (a proxy that freezes the connection) is
//! ended; without `--enforce` the command runs on and the failure is logged.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use causeway_recorder::RecorderConfig;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// A recorder served in this process until dropped.
struct Recorder {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl Recorder {
    /// A recorder taking recordings from `allow`, with local storage.
    async fn start(allow: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config: RecorderConfig = toml::from_str(&format!(
            "allow = [\"{allow}\"]\nspool_dir = \"{spool}\"\nack_interval_ms = 200\n\n[storage]\nkind = \"local\"\ndir = \"{store}\"\n",
            spool = dir.path().join("spool").display(),
            store = dir.path().join("store").display(),
        ))
        .expect("a valid recorder config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(causeway_recorder::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            dir,
            _stop: stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (up to 10 s) for a recording of `node` to be stored; returns
    /// the names under the node's directory.
    async fn stored(&self, node: &str) -> Vec<String> {
        let dir = self.dir.path().join("store").join(node);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let names: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // Local storage writes `NAME.tmp`, then renames it into place.
                .filter(|name| name.ends_with(".cast"))
                .collect();
            if !names.is_empty() {
                return names;
            }
            assert!(
                Instant::now() < deadline,
                "no recording of {node} stored within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn recording(&self, node: &str, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join("store").join(node).join(name))
            .expect("read the recording")
    }
}

fn record(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_appliance"));
    cmd.arg("record")
        .args(args)
        .env_remove("SSH_CONNECTION")
        .env_remove("SSH_ORIGINAL_COMMAND")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run_record(args: &[&str]) -> Output {
    let child = record(args).spawn().expect("appliance runs");
    tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("appliance record finished within 30 s")
        .expect("appliance record output")
}

/// The output events' data of a stored recording, concatenated.
fn played(recording: &[u8]) -> String {
    let text = std::str::from_utf8(recording).expect("recording is UTF-8");
    text.lines()
        .skip(1)
        .map(|line| {
            let (t, code, data): (f64, String, String) =
                serde_json::from_str(line).expect("an asciicast event");
            assert!(t >= 0.0);
            assert_eq!(code, "o", "only output events: {line}");
            data
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lands_intact_and_the_exit_status_passes_through() {
    let rec = Recorder::start("127.0.0.0/8").await;
    let script = "printf 'h\\303\\251llo w\\303\\266rld\\n'; seq 1 20000; exit 7";
    let out = run_record(&[
        "--recorder",
        &rec.url(),
        "--node-id",
        "nREC",
        "--connection-id",
        "c1",
        "--",
        "sh",
        "-c",
        script,
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the command's status; stderr: {stderr}"
    );
    let mut expected = "h\u{e9}llo w\u{f6}rld\r\n".to_owned();
    for i in 1..=20000 {
        expected.push_str(&format!("{i}\r\n"));
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expected,
        "the user saw the output"
    );

    let stored = rec.stored("nREC").await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let (stem, nonce) = stored[0]
        .strip_suffix(".cast")
        .and_then(|k| k.rsplit_once('-'))
        .expect("a .cast key");
    assert!(
        stem.ends_with("-c1") && nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "stored as <node-id>/<timestamp>-<connection>-<nonce>.cast: {stored:?}"
    );
    let bytes = rec.recording("nREC", &stored[0]);
    let first = bytes.split(|b| *b == b'\n').next().expect("a header");
    let header = causeway_recording::CastHeader::parse(first).expect("a valid header");
    assert_eq!(header.src_node_id, "nREC");
    assert_eq!(header.connection_id, "c1");
    assert_eq!(header.command, format!("sh -c {script}"));
    assert_eq!(
        (header.width, header.height),
        (80, 24),
        "no terminal: the default size"
    );
    assert_eq!(
        played(&bytes),
        expected,
        "the recording holds exactly the output"
    );
}

/// Runs `touch MARKER` under `record --enforce` with `url`; asserts that
/// it was refused (status 1, the marker absent) and returns its stderr.
async fn refused_at(url: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let marker_arg = marker.to_string_lossy();
    let out = run_record(&["--recorder", url, "--enforce", "--", "touch", &marker_arg]).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!marker.exists(), "the command did not run");
    assert!(
        stderr.contains("This session must be recorded, but the recorder cannot record it:")
            && stderr.contains("The session was refused."),
        "a clear message: {stderr}"
    );
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_a_session_no_recorder_answers() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let stderr = refused_at(&url).await;
    assert!(
        stderr.contains(&format!("connecting to {url} failed")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_refuses_a_session_the_recorder_forbids() {
    // The recorder's allow-list leaves loopback out: it answers 403.
    let rec = Recorder::start("100.64.0.0/10").await;
    let stderr = refused_at(&rec.url()).await;
    let refusal = format!("{} answered HEAD /v2/record with 403 Forbidden", rec.url());
    assert!(stderr.contains(&refusal), "names the refusal: {stderr}");
    // The fallback to HTTP/1.1 was refused too, with the recorder's reason.
    let refusal = format!(
        "then over HTTP/1.1: {0} refused the recording: {0} answered POST /record with 403 Forbidden: source address is not allowed",
        rec.url()
    );
    assert!(stderr.contains(&refusal), "names the refusal: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_enforce_an_unrecorded_session_runs_and_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("ran");
    let out = run_record(&[
        "--recorder",
        "http://127.0.0.1:9",
        "--",
        "touch",
        &marker.to_string_lossy(),
    ])
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(marker.exists(), "the command ran");
    assert!(
        stderr.contains("the session runs unrecorded")
            && stderr.contains("connecting to http://127.0.0.1:9 failed"),
        "the failure is logged: {stderr}"
    );
}

/// A TCP proxy to the recorder that can freeze: from then on it moves no
/// byte either way and keeps the connections open, like a network that
/// silently drops everything.
struct FreezingProxy {
    addr: SocketAddr,
    freeze: watch::Sender<bool>,
}

impl FreezingProxy {
    async fn start(upstream: SocketAddr) -> Self {
        Self::start_with(upstream, false).await
    }

    /// With `http1_only`, connections that open with the HTTP/2 preface
    /// are closed, so the recorder looks like one that has no h2c.
    async fn start_with(upstream: SocketAddr, http1_only: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (freeze, frozen) = watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut first = [0u8; 3];
                if http1_only
                    && client
                        .peek(&mut first)
                        .await
                        .is_ok_and(|_| &first == b"PRI")
                {
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, frozen.clone()));
                tokio::spawn(pipe(sr, cw, frozen.clone()));
            }
        });
        Self { addr, freeze }
    }
}

async fn pipe(
    mut from: impl tokio::io::AsyncRead + Unpin + Send,
    mut to: impl tokio::io::AsyncWrite + Unpin + Send,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => match read { Ok(0) | Err(_) => return, Ok(n) => Some(n) },
            _ = frozen.wait_for(|f| *f) => None,
        };
        let is_frozen = *frozen.borrow();
        let moved = match read {
            Some(n) if !is_frozen => to.write_all(&buf[..n]).await.is_ok(),
            _ => false,
        };
        if !moved {
            // Hold both ends open without moving bytes.
            std::future::pending::<()>().await;
        }
    }
}

/// Starts a session that prints `started`, then a tick every 0.2 s for
/// `ticks` ticks, then creates `marker`; freezes the proxy once the
/// session has started; returns the output and how long it took.
async fn session_through_a_frozen_proxy(
    enforce: bool,
    ticks: u32,
    marker: &Path,
) -> (Output, Duration) {
    let rec = Recorder::start("127.0.0.0/8").await;
    let proxy = FreezingProxy::start(rec.addr).await;
    let url = format!("http://{}", proxy.addr);
    let script = format!(
        "echo started; i=0; while [ $i -lt {ticks} ]; do sleep 0.2; echo tick; i=$((i+1)); done; touch '{}'",
        marker.display()
    );
    let mut args = vec!["--recorder", &url, "--ack-timeout-ms", "1000"];
    if enforce {
        args.push("--enforce");
    }
    args.extend(["--", "sh", "-c", &script]);
    let session = Started::spawn(&args).await;
    proxy.freeze.send_replace(true);
    session.finish().await
}

/// A running `appliance record` whose command has printed `started`.
struct Started {
    child: tokio::process::Child,
    stdout: BufReader<tokio::process::ChildStdout>,
    at: Instant,
}

impl Started {
    /// Starts `appliance record ARGS` and waits (up to 10 s) for `started`.
    async fn spawn(args: &[&str]) -> Self {
        let at = Instant::now();
        let mut child = record(args).spawn().expect("appliance runs");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let mut first = String::new();
        tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut first))
            .await
            .expect("the session started within 10 s")
            .expect("read stdout");
        assert_eq!(first, "started\r\n");
        Self { child, stdout, at }
    }

    /// Waits (up to 30 s) for the end; the output (with `started`) and
    /// how long the whole run took.
    async fn finish(mut self) -> (Output, Duration) {
        let mut stdout = b"started\r\n".to_vec();
        let (read, status) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(self.stdout.read_to_end(&mut stdout), self.child.wait())
        })
        .await
        .expect("the session ended within 30 s");
        read.expect("read stdout");
        let mut stderr = Vec::new();
        if let Some(mut e) = self.child.stderr.take() {
            e.read_to_end(&mut stderr).await.expect("read stderr");
        }
        let status = status.expect("appliance exit status");
        let took = self.at.elapsed();
        (
            Output {
                status,
                stdout,
                stderr,
            },
            took,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforce_ends_the_session_when_acks_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("finished");
    // 25 ticks: the command would run 5 s and then create the marker.
    let (out, took) = session_through_a_frozen_proxy(true, 25, &marker).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("This session must be recorded, but recording failed: the recorder acknowledged nothing for")
            && stderr.contains("The session was ended."),
        "a clear message: {stderr}"
    );
    assert!(
        took < Duration::from_secs(4),
        "ended about 1 s after the freeze, took {took:?}"
    );
    // Had the command survived, it would create the marker 5 s after it started.
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(took)).await;
    assert!(!marker.exists(), "the command's process group was killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_enforce_the_session_goes_on_when_acks_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("finished");
    // 15 ticks: 3 s, well past the 1 s ack timeout.
    let (out, _) = session_through_a_frozen_proxy(false, 15, &marker).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(marker.exists(), "the command ran to its end");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("tick\r\n")
            .count(),
        15,
        "the user saw all output"
    );
    assert!(
        stderr.contains("recording failed; the session goes on unrecorded")
            && stderr.contains("the recorder acknowledged nothing for"),
        "the failure is logged: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hangup_reaches_the_command_and_the_recording_is_closed() {
    let rec = Recorder::start("127.0.0.0/8").await;
    let script = "trap 'echo got-hup; exit 5' HUP; echo started; while :; do sleep 0.1; done";
    let url = rec.url();
    let args = [
        "--recorder",
        &url,
        "--node-id",
        "nHUP",
        "--",
        "sh",
        "-c",
        script,
    ];
    let session = Started::spawn(&args).await;
    // What sshd's side sees when the client goes away.
    let pid = session.child.id().expect("running") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("signalling appliance record");
    let (out, _) = session.finish().await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "the command's trap ran; stderr: {stderr}"
    );
    let stored = rec.stored("nHUP").await;
    let recording = rec.recording("nHUP", &stored[0]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.ends_with("got-hup\r\n"), "{shown}");
    // The shell may also report the killed `sleep` ("Hangup").
    assert_eq!(played(&recording), shown, "the whole session was recorded");
}

/// Reads the terminal until `want` has appeared (up to 10 s); returns all read.
async fn read_until(pty: &mut pty_process::Pty, seen: &mut String, want: &str) {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(want) {
            let n = pty.read(&mut buf).await.expect("reading the terminal");
            assert!(n > 0, "the terminal closed before {want:?}; saw {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} within 10 s; saw {seen:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_resizes_and_keys_reach_the_command() {
    let rec = Recorder::start("127.0.0.0/8").await;
    // appliance record runs on a terminal of ours, as under sshd.
    let (mut pty, pts) = pty_process::open().expect("a pseudo-terminal");
    pty.resize(pty_process::Size::new(24, 80))
        .expect("sizing it");
    // Waits (up to 10 s) for its own terminal to become 100x30, then for a line.
    let script = "echo started; i=0; while [ \"$(stty size)\" != '30 100' ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; echo size=$(stty size); read line; echo got-$line";
    let mut child = pty_process::Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args([
            "record",
            "--recorder",
            &rec.url(),
            "--node-id",
            "nTTY",
            "--",
            "sh",
            "-c",
            script,
        ])
        .env_remove("SSH_CONNECTION")
        .env_remove("SSH_ORIGINAL_COMMAND")
        .kill_on_drop(true)
        .spawn(pts)
        .expect("appliance runs");
    let mut seen = String::new();
    read_until(&mut pty, &mut seen, "started").await;
    // The kernel sends SIGWINCH to appliance record, the terminal's foreground process.
    pty.resize(pty_process::Size::new(30, 100))
        .expect("resizing");
    read_until(&mut pty, &mut seen, "size=30 100").await;
    pty.write_all(b"hello\r").await.expect("typing");
    read_until(&mut pty, &mut seen, "got-hello").await;
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("ended within 10 s")
        .expect("exit status");
    assert_eq!(status.code(), Some(0), "saw {seen:?}");

    let stored = rec.stored("nTTY").await;
    let recording = String::from_utf8(rec.recording("nTTY", &stored[0])).expect("UTF-8");
    let mut lines = recording.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().expect("a header")).expect("JSON header");
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    let events: Vec<(f64, String, String)> = lines
        .map(|l| serde_json::from_str(l).expect("an event"))
        .collect();
    assert!(
        events
            .iter()
            .any(|(_, code, data)| code == "r" && data == "100x30"),
        "the resize is recorded: {recording}"
    );
    let output: String = events
        .iter()
        .filter(|(_, code, _)| code == "o")
        .map(|(_, _, data)| data.as_str())
        .collect();
    assert!(
        output.contains("size=30 100") && output.contains("got-hello"),
        "the output is recorded: {recording}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_recorder_that_answers_gets_the_session() {
    let rec = Recorder::start("127.0.0.0/8").await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let recorders = format!("http://{dead},{}", rec.url());
    let args = [
        "--recorder",
        &recorders,
        "--enforce",
        "--node-id",
        "nTWO",
        "--",
        "echo",
        "second",
    ];
    let out = run_record(&args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let stored = rec.stored("nTWO").await;
    assert_eq!(played(&rec.recording("nTWO", &stored[0])), "second\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_without_h2c_gets_the_session_over_http1() {
    let rec = Recorder::start("127.0.0.0/8").await;
    let proxy = FreezingProxy::start_with(rec.addr, true).await;
    let url = format!("http://{}", proxy.addr);
    let args = [
        "--recorder",
        &url,
        "--enforce",
        "--node-id",
        "nV1",
        "--",
        "sh",
        "-c",
        "seq 1 3000",
    ];
    let out = run_record(&args).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("WARN"), "no failure logged: {stderr}");
    let expected: String = (1..=3000).map(|i| format!("{i}\r\n")).collect();
    let stored = rec.stored("nV1").await;
    assert_eq!(played(&rec.recording("nV1", &stored[0])), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_input_does_not_block_the_session() {
    let rec = Recorder::start("127.0.0.0/8").await;
    let url = rec.url();
    let mut child = record(&["--recorder", &url, "--node-id", "nBIG", "--", "cat"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("appliance runs");
    // Far more than a terminal buffers either way: `cat` answers while it is read.
    let input: String = (1..=20_000).map(|i| format!("line {i}\n")).collect();
    let mut stdin = child.stdin.take().expect("stdin piped");
    let writer = tokio::spawn(async move {
        stdin
            .write_all(input.as_bytes())
            .await
            .expect("writing input");
    });
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the session ended within 30 s")
        .expect("appliance record output");
    writer.await.expect("input written");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `cat` printed the last line (the terminal's echo of input may be
    // dropped when its output queue is full, so it is not counted).
    assert!(stdout.contains("line 20000\r\n"), "all input went through");
    let stored = rec.stored("nBIG").await;
    assert_eq!(
        played(&rec.recording("nBIG", &stored[0])),
        stdout,
        "recorded as shown"
    );
}
