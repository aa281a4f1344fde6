//! Ingest benchmark: throughput (MB/s) of recordings streamed over
//! `/v2/record` into a recorder in this process, next to a baseline of the
//! same bytes written and fsync'd straight to files in the same directory
//! (the ceiling any recorder that acks only durable bytes can reach), then
//! how many concurrent sessions the recorder holds open and keeps acking.
//!
//! ```text
//! cargo run --release -p causeway-recorder --example ingest-bench -- \
//!     [--sessions 100] [--mib 256] [--chunk-kib 16] [--hold 2000] [--dir DIR]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use causeway_recorder::{RecorderConfig, StorageConfig};
use clap::Parser;
use http_body_util::BodyExt;
use http_body_util::channel::{Channel, Sender};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;

/// Ingest throughput and concurrent sessions of the session recorder.
#[derive(Parser)]
struct Args {
    /// Sessions streaming at once in the throughput runs.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// MiB sent in total per throughput run (split across the sessions).
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Bytes per request-body chunk, in KiB.
    #[arg(long, default_value_t = 16)]
    chunk_kib: usize,
    /// Concurrent sessions to open and hold (one TCP connection each); 0
    /// skips this part.
    #[arg(long, default_value_t = 2000)]
    hold: usize,
    /// Where the spool, storage and baseline files go [default: a temporary
    /// directory under $TMPDIR].
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(args.sessions > 0, "--sessions: expected at least 1");
    ensure!(args.chunk_kib > 0, "--chunk-kib: expected at least 1");
    raise_fd_limit();
    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_owned()
        }
    };
    let per_session = args.mib * 1024 * 1024 / args.sessions;
    let chunk = args.chunk_kib * 1024;
    println!(
        "ingest: {} sessions x {:.1} MiB in {} KiB chunks, {} cores, in {}",
        args.sessions,
        per_session as f64 / (1024.0 * 1024.0),
        args.chunk_kib,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        dir.display()
    );

    let baseline = baseline(&dir.join("baseline"), args.sessions, per_session, chunk).await?;
    let recorder = Recorder::start(&dir.join("recorder")).await?;
    let ingest = throughput(&recorder, args.sessions, per_session, chunk).await?;
    println!(
        "  baseline  write+fsync per chunk to {} files: {:>8.1} MB/s",
        args.sessions,
        baseline.mb_per_s()
    );
    println!(
        "  recorder  /v2/record over h2c, acked:          {:>8.1} MB/s ({:.0}% of baseline)",
        ingest.acked.mb_per_s(),
        100.0 * ingest.acked.mb_per_s() / baseline.mb_per_s()
    );
    println!(
        "  recorder  ... and uploaded to local storage:   {:>8.1} MB/s",
        ingest.stored.mb_per_s()
    );

    if args.hold > 0 {
        let held = hold(&recorder, args.hold).await?;
        println!(
            "hold: {} of {} sessions open at once, each acked again after all were open; \
             opening took {:.1} s; recorder+client RSS grew {:.1} MiB ({:.1} KiB per session)",
            held.sessions,
            args.hold,
            held.open_time.as_secs_f64(),
            held.rss_growth as f64 / (1024.0 * 1024.0),
            held.rss_growth as f64 / 1024.0 / held.sessions.max(1) as f64
        );
        if let Some(why) = held.stopped_by {
            println!("  stopped at {} sessions: {why}", held.sessions);
        }
    }
    recorder.stop().await
}

/// Bytes moved in a time.
struct Rate {
    bytes: u64,
    took: Duration,
}

impl Rate {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.took.as_secs_f64()
    }
}

/// The same bytes, chunking and concurrency as the recorder run, written
/// and `fdatasync`ed per chunk straight to files.
async fn baseline(
    dir: &Path,
    sessions: usize,
    per_session: usize,
    chunk: usize,
) -> anyhow::Result<Rate> {
    tokio::fs::create_dir_all(dir).await?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..sessions {
        let path = dir.join(format!("{s}.cast"));
        let data = recording(s, per_session);
        tasks.spawn(async move {
            let mut f = tokio::fs::File::create(&path).await?;
            for part in data.chunks(chunk) {
                f.write_all(part).await?;
                f.sync_data().await?;
            }
            anyhow::Ok(data.len() as u64)
        });
    }
    let mut bytes = 0;
    while let Some(done) = tasks.join_next().await {
        bytes += done??;
    }
    Ok(Rate {
        bytes,
        took: started.elapsed(),
    })
}

struct Ingest {
    acked: Rate,
    stored: Rate,
}

async fn throughput(
    recorder: &Recorder,
    sessions: usize,
    per_session: usize,
    chunk: usize,
) -> anyhow::Result<Ingest> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..sessions {
        let data = Bytes::from(recording(s, per_session));
        let addr = recorder.addr;
        tasks.spawn(async move {
            let mut session = Session::open(addr).await?;
            for part in 0..data.len().div_ceil(chunk) {
                let end = ((part + 1) * chunk).min(data.len());
                session.send(data.slice(part * chunk..end)).await?;
            }
            session.finish();
            let acked = session.last_ack().await?;
            ensure!(
                acked == data.len() as u64,
                "session {s}: acked {acked} of {} bytes",
                data.len()
            );
            anyhow::Ok(acked)
        });
    }
    let mut bytes = 0;
    while let Some(done) = tasks.join_next().await {
        bytes += done??;
    }
    let acked = started.elapsed();
    let store = recorder.dir.join("store");
    loop {
        let n = count_files(&store);
        if n >= sessions {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {n} of {sessions} recordings were stored after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Ingest {
        acked: Rate { bytes, took: acked },
        stored: Rate {
            bytes,
            took: started.elapsed(),
        },
    })
}

struct Held {
    sessions: usize,
    open_time: Duration,
    rss_growth: u64,
    stopped_by: Option<String>,
}

/// Opens up to `target` sessions, each with its header and one event acked,
/// keeps them all open, then sends one more event on every one and waits
/// for every ack.
async fn hold(recorder: &Recorder, target: usize) -> anyhow::Result<Held> {
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut open = Vec::with_capacity(target);
    let mut stopped_by = None;
    // Opened in waves of OPENING at once; each session's first ack waits
    // for an fsync, so one at a time would measure fsync latency instead.
    const OPENING: usize = 100;
    'waves: for wave in (0..target).collect::<Vec<_>>().chunks(OPENING) {
        let mut tasks = tokio::task::JoinSet::new();
        for &s in wave {
            let addr = recorder.addr;
            tasks.spawn(async move {
                let attempt = async {
                    let mut session = Session::open(addr).await?;
                    let first = Bytes::from(format!("{}{}", header(s), event(0.0, "hello\r\n")));
                    let len = first.len() as u64;
                    session.send(first).await?;
                    session.ack_at_least(len).await?;
                    anyhow::Ok((session, len))
                };
                tokio::time::timeout(Duration::from_secs(30), attempt)
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no ack within 30 s")))
            });
        }
        while let Some(done) = tasks.join_next().await {
            match done? {
                Ok(opened) => open.push(opened),
                Err(e) => {
                    stopped_by = Some(format!("{e:#}"));
                    break 'waves;
                }
            }
        }
    }
    let open_time = started.elapsed();
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let mut acked_again = 0;
    for (session, len) in &mut open {
        let more = Bytes::from(event(1.0, "still here\r\n"));
        *len += more.len() as u64;
        session.send(more).await?;
    }
    for (session, len) in &mut open {
        session.ack_at_least(*len).await?;
        acked_again += 1;
    }
    for (session, _) in &mut open {
        session.finish();
    }
    Ok(Held {
        sessions: acked_again,
        open_time,
        rss_growth,
        stopped_by,
    })
}

/// A recorder in this process, local storage, serving until stopped.
struct Recorder {
    addr: SocketAddr,
    dir: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Recorder {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        let config = RecorderConfig {
            listen: "127.0.0.1:0".parse()?,
            allow: vec!["127.0.0.0/8".parse()?],
            spool_dir: dir.join("spool"),
            max_line_bytes: 64 * 1024,
            // The hold part measures what the machine allows, not the cap.
            max_sessions: 1_000_000,
            // Every bench session comes from 127.0.0.1.
            max_sessions_per_source: 1_000_000,
            storage: StorageConfig::Local {
                dir: dir.join("store"),
                retention_days: None,
            },
            ..RecorderConfig::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(causeway_recorder::serve(config, listener, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            dir: dir.to_owned(),
            stop,
            task,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("the recorder task")?
    }
}

/// One `POST /v2/record` on its own HTTP/2 connection.
struct Session {
    body: Option<Sender<Bytes>>,
    replies: Incoming,
    pending: Vec<u8>,
    acked: u64,
}

impl Session {
    async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .context("connecting")?;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .context("HTTP/2 handshake")?;
        tokio::spawn(conn);
        let (body, channel) = Channel::<Bytes>::new(4);
        let response = send
            .send_request(Request::post("http://recorder/v2/record").body(channel)?)
            .await
            .context("POST /v2/record")?;
        ensure!(
            response.status().is_success(),
            "POST /v2/record: {}",
            response.status()
        );
        Ok(Self {
            body: Some(body),
            replies: response.into_body(),
            pending: Vec::new(),
            acked: 0,
        })
    }

    async fn send(&mut self, bytes: Bytes) -> anyhow::Result<()> {
        let body = self.body.as_mut().context("the body is finished")?;
        body.send_data(bytes)
            .await
            .map_err(|_| anyhow::anyhow!("the recorder closed the request body"))
    }

    fn finish(&mut self) {
        self.body = None;
    }

    /// Reads reply frames until an ack of at least `n` bytes.
    async fn ack_at_least(&mut self, n: u64) -> anyhow::Result<u64> {
        while self.acked < n {
            if !self.next_reply().await? {
                bail!("the reply stream ended at ack {} of {n}", self.acked);
            }
        }
        Ok(self.acked)
    }

    /// Reads reply frames to the end; the last ack.
    async fn last_ack(&mut self) -> anyhow::Result<u64> {
        while self.next_reply().await? {}
        Ok(self.acked)
    }

    /// Reads one reply line; false at the end of the stream.
    async fn next_reply(&mut self) -> anyhow::Result<bool> {
        loop {
            if let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                let v: serde_json::Value = serde_json::from_slice(&line)?;
                if let Some(e) = v.get("error") {
                    bail!("the recorder ended the session: {e}");
                }
                self.acked = v["ack"].as_u64().context("a reply without ack")?;
                return Ok(true);
            }
            match self.replies.frame().await {
                None => return Ok(false),
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A recording of about `size` bytes: a header, then 1 KiB output events
/// of terminal-like text.
fn recording(session: usize, size: usize) -> Vec<u8> {
    let mut out = header(session).into_bytes();
    let line = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n";
    let text: String = line.repeat(1024 / line.len());
    let mut t = 0.0;
    while out.len() < size {
        out.extend_from_slice(event(t, &text).as_bytes());
        t += 0.01;
    }
    out
}

fn header(session: usize) -> String {
    format!(
        "{{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1700000000,\"srcNode\":\"bench\",\"srcNodeID\":\"nBENCH{}\",\"sshUser\":\"bench\",\"localUser\":\"bench\",\"connectionID\":\"c{session}\"}}\n",
        session % 16
    )
}

fn event(t: f64, data: &str) -> String {
    let mut line = serde_json::to_string(&(t, "o", data)).expect("an event serializes");
    line.push('\n');
    line
}

fn count_files(root: &Path) -> usize {
    let mut n = 0;
    let mut dirs = vec![root.to_owned()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "cast") {
                n += 1;
            }
        }
    }
    n
}

/// Resident set size of this process, from /proc.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Each held session costs three descriptors (client socket, server
/// socket, spool file): lift the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
