//! Traffic for the failover benchmark (`tests/bench/failover.sh`).
//!
//! `serve` runs on the VPC host: a UDP echo and a TCP echo. `send` runs on
//! the client: one UDP datagram and one 8-byte TCP message every interval,
//! each numbered, and it records when each echo came back. At the end it
//! prints one JSON document: for UDP the gaps (a run of datagrams that got
//! no echo, from the first one lost to the first one delivered again), for
//! TCP the longest stall between two echoes and what happened to the
//! connection (it survived, or was reset and how long a new one took).
//!
//! Times are the sender's monotonic clock in milliseconds from the start.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// A UDP probe: sequence number and padding to a fixed size.
const UDP_LEN: usize = 64;
/// How long a TCP connect may take before the sender retries.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Parser)]
#[command(about = "UDP and TCP traffic for the failover benchmark")]
struct Cli {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Echo UDP datagrams and TCP bytes back to their sender, until killed.
    Serve {
        /// UDP address to echo on.
        #[arg(long)]
        udp: SocketAddr,
        /// TCP address to echo on.
        #[arg(long)]
        tcp: SocketAddr,
    },
    /// Send numbered traffic and report what came back, as JSON.
    Send {
        /// The server's UDP address.
        #[arg(long)]
        udp: SocketAddr,
        /// The server's TCP address.
        #[arg(long)]
        tcp: SocketAddr,
        /// Milliseconds between two messages on each protocol.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
        interval_ms: u64,
        /// How long to send, in seconds.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Mode::Serve { udp, tcp } => serve(udp, tcp),
        Mode::Send {
            udp,
            tcp,
            interval_ms,
            seconds,
        } => {
            let interval = Duration::from_millis(interval_ms);
            let report = send(udp, tcp, interval, Duration::from_secs(seconds))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

fn serve(udp: SocketAddr, tcp: SocketAddr) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(udp).with_context(|| format!("binding UDP {udp}"))?;
    let listener = TcpListener::bind(tcp).with_context(|| format!("binding TCP {tcp}"))?;
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    });
    for stream in listener.incoming().flatten() {
        thread::spawn(move || echo_tcp(stream));
    }
    Ok(())
}

fn echo_tcp(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

fn send(
    udp: SocketAddr,
    tcp: SocketAddr,
    interval: Duration,
    duration: Duration,
) -> anyhow::Result<Value> {
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let tcp_thread = {
        let done = Arc::clone(&done);
        thread::spawn(move || tcp_stream(tcp, interval, start, &done))
    };
    let udp_report = udp_probe(udp, interval, start, duration)?;
    done.store(true, Ordering::Relaxed);
    let tcp_report = tcp_thread
        .join()
        .map_err(|_| anyhow::anyhow!("the TCP thread panicked"))??;
    Ok(json!({
        "interval_ms": interval.as_millis() as u64,
        "seconds": duration.as_secs(),
        "udp": udp_report,
        "tcp": tcp_report,
    }))
}

fn ms(since: Duration) -> f64 {
    (since.as_secs_f64() * 1000.0 * 10.0).round() / 10.0
}

/// Sends one datagram per interval; a receiver thread notes each echo.
fn udp_probe(
    target: SocketAddr,
    interval: Duration,
    start: Instant,
    duration: Duration,
) -> anyhow::Result<Value> {
    let socket = UdpSocket::bind("0.0.0.0:0").context("binding the UDP probe socket")?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .context("setting the UDP read timeout")?;
    let count = (duration.as_millis() / interval.as_millis()) as usize;
    let sent: Arc<Mutex<Vec<Option<Duration>>>> = Arc::new(Mutex::new(vec![None; count]));
    let echoed: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(vec![false; count]));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let socket = socket.try_clone().context("cloning the UDP socket")?;
        let (echoed, stop) = (Arc::clone(&echoed), Arc::clone(&stop));
        thread::spawn(move || {
            let mut buf = [0u8; UDP_LEN];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = socket.recv_from(&mut buf)
                    && n == UDP_LEN
                {
                    let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
                    if let Some(slot) = echoed.lock().expect("lock").get_mut(seq) {
                        *slot = true;
                    }
                }
            }
        })
    };
    let mut send_errors = 0u64;
    for seq in 0..count {
        let due = start + interval * seq as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let mut datagram = [0u8; UDP_LEN];
        datagram[..8].copy_from_slice(&(seq as u64).to_be_bytes());
        // A send can fail while routes move (no route, refused); that
        // datagram simply counts as lost.
        if socket.send_to(&datagram, target).is_err() {
            send_errors += 1;
        }
        sent.lock().expect("lock")[seq] = Some(start.elapsed());
    }
    // Late echoes still count: give the last ones a second to come back.
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the UDP receiver panicked"))?;
    let sent = sent.lock().expect("lock").clone();
    let echoed = echoed.lock().expect("lock").clone();
    let times: Vec<Duration> = sent.into_iter().map(|t| t.unwrap_or_default()).collect();
    Ok(udp_gaps(&times, &echoed, send_errors))
}

/// The runs of lost datagrams: each from the first lost one's send time to
/// the send time of the first one delivered after it.
fn udp_gaps(times: &[Duration], echoed: &[bool], send_errors: u64) -> Value {
    let mut gaps = Vec::new();
    let mut run_start: Option<usize> = None;
    for (seq, &ok) in echoed.iter().enumerate() {
        match (ok, run_start) {
            (false, None) => run_start = Some(seq),
            (true, Some(first)) => {
                gaps.push(json!({
                    "from_ms": ms(times[first]),
                    "gap_ms": ms(times[seq] - times[first]),
                    "lost": seq - first,
                }));
                run_start = None;
            }
            _ => {}
        }
    }
    let unrecovered =
        run_start.map(|first| json!({ "from_ms": ms(times[first]), "lost": echoed.len() - first }));
    let longest = gaps
        .iter()
        .filter_map(|g| g["gap_ms"].as_f64())
        .fold(0.0, f64::max);
    json!({
        "sent": echoed.len(),
        "echoed": echoed.iter().filter(|&&e| e).count(),
        "send_errors": send_errors,
        "longest_gap_ms": longest,
        "gaps": gaps,
        "not_recovered": unrecovered,
    })
}

/// One TCP connection sending a numbered message per interval; when it
/// breaks, reconnects until `done` and reports how long that took.
fn tcp_stream(
    target: SocketAddr,
    interval: Duration,
    start: Instant,
    done: &AtomicBool,
) -> anyhow::Result<Value> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {target}"))?;
    let outcome = run_connection(&mut stream, interval, start, done);
    let mut report = json!({
        "longest_stall_ms": ms(outcome.longest_stall),
        "echoes": outcome.echoes,
    });
    match outcome.broke {
        None => report["connection"] = json!("survived"),
        Some((at, why)) => {
            report["connection"] = json!("broken");
            report["broken_at_ms"] = json!(ms(at));
            report["error"] = json!(why);
            // How long until a new connection carries an echo again.
            loop {
                if done.load(Ordering::Relaxed) {
                    report["reconnected_after_ms"] = Value::Null;
                    break;
                }
                if let Ok(mut fresh) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
                    && echo_once(&mut fresh).is_ok()
                {
                    report["reconnected_after_ms"] = json!(ms(start.elapsed() - at));
                    break;
                }
                thread::sleep(interval);
            }
        }
    }
    Ok(report)
}

struct ConnectionOutcome {
    longest_stall: Duration,
    echoes: u64,
    broke: Option<(Duration, String)>,
}

fn run_connection(
    stream: &mut TcpStream,
    interval: Duration,
    start: Instant,
    done: &AtomicBool,
) -> ConnectionOutcome {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1)));
    let mut last_echo = start.elapsed();
    let mut longest_stall = Duration::ZERO;
    let mut echoes = 0u64;
    let mut pending = Vec::new();
    let mut seq = 0u64;
    let mut next_send = Instant::now();
    while !done.load(Ordering::Relaxed) {
        if Instant::now() >= next_send {
            if let Err(e) = stream.write_all(&seq.to_be_bytes()) {
                return ConnectionOutcome {
                    longest_stall,
                    echoes,
                    broke: Some((start.elapsed(), e.to_string())),
                };
            }
            seq += 1;
            next_send += interval;
        }
        let mut buf = [0u8; 4096];
        match stream.read(&mut buf) {
            Ok(0) => {
                return ConnectionOutcome {
                    longest_stall,
                    echoes,
                    broke: Some((start.elapsed(), "closed by the peer".into())),
                };
            }
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                let whole = pending.len() / 8;
                if whole > 0 {
                    pending.drain(..whole * 8);
                    echoes += whole as u64;
                    let now = start.elapsed();
                    longest_stall = longest_stall.max(now - last_echo);
                    last_echo = now;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                return ConnectionOutcome {
                    longest_stall,
                    echoes,
                    broke: Some((start.elapsed(), e.to_string())),
                };
            }
        }
    }
    longest_stall = longest_stall.max(start.elapsed() - last_echo);
    ConnectionOutcome {
        longest_stall,
        echoes,
        broke: None,
    }
}

fn echo_once(stream: &mut TcpStream) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.write_all(&[7u8; 8])?;
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf)?;
    if buf != [7u8; 8] {
        bail!("the echo differs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_runs_from_the_first_lost_to_the_first_delivered_again() {
        let times: Vec<Duration> = (0..8).map(|i| Duration::from_millis(10 * i)).collect();
        let echoed = [true, true, false, false, false, true, false, false];
        let report = udp_gaps(&times, &echoed, 0);
        assert_eq!(report["longest_gap_ms"], json!(30.0));
        assert_eq!(report["gaps"][0]["lost"], json!(3));
        assert_eq!(report["gaps"][0]["from_ms"], json!(20.0));
        // The run still open at the end is reported apart, not as a gap.
        assert_eq!(report["not_recovered"]["lost"], json!(2));
        assert_eq!(report["echoed"], json!(3));
    }
}
