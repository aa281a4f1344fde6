//! `appliance dns query NAME [TYPE]`: one question to a resolver (the
//! node resolver on 100.100.100.100 by default), over UDP and again over
//! TCP when the answer comes back truncated, and the answer printed.
//! Building and reading the messages is `causeway_dns::Lookup`'s.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use causeway_dns::{Answer, Lookup};
use clap::Args;
use serde::Serialize;
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::node::{RESOLVER_ADDR, read_answer, write_message};

/// Arguments of `appliance dns query`.
#[derive(Args)]
pub struct QueryArgs {
    /// The name to look up, e.g. router.tailnet.causeway.internal.
    name: String,
    /// The record type: A, AAAA, PTR, TXT, MX, SRV, CNAME, …
    #[arg(default_value = "A")]
    record_type: String,
    /// The resolver to ask [default: the node resolver, 100.100.100.100].
    #[arg(long)]
    server: Option<IpAddr>,
    /// Its port.
    #[arg(long, default_value_t = 53)]
    port: u16,
    /// Ask over TCP from the start.
    #[arg(long)]
    tcp: bool,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What was asked of whom, and what came back.
#[derive(Serialize)]
struct Report {
    question: String,
    server: SocketAddr,
    transport: &'static str,
    elapsed_ms: f64,
    #[serde(flatten)]
    answer: Answer,
}

/// Runs the command: prints the answer, or fails naming the server when
/// none came within the timeout.
pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let lookup = Lookup::new(&args.name, &args.record_type)?;
    let server = SocketAddr::new(args.server.unwrap_or(IpAddr::V4(RESOLVER_ADDR)), args.port);
    let deadline = Duration::from_millis(args.timeout_ms);
    let started = Instant::now();
    let (mut transport, mut answer) = if args.tcp {
        ("tcp", ask_tcp(&lookup, server, deadline).await?)
    } else {
        ("udp", ask_udp(&lookup, server, deadline).await?)
    };
    if answer.truncated && !args.tcp {
        transport = "tcp";
        answer = ask_tcp(&lookup, server, deadline).await?;
    }
    let report = Report {
        question: lookup.question(),
        server,
        transport,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        answer,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serialising the answer")?
        );
    } else {
        println!(
            ";; {} @{} ({}) {:.1} ms",
            report.question, report.server, report.transport, report.elapsed_ms
        );
        println!(
            ";; {}{}",
            report.answer.status,
            if report.answer.authoritative {
                ", authoritative"
            } else {
                ""
            }
        );
        for record in &report.answer.records {
            println!("{record}");
        }
    }
    Ok(())
}

async fn ask_udp(
    lookup: &Lookup,
    server: SocketAddr,
    deadline: Duration,
) -> anyhow::Result<Answer> {
    let id: u16 = rand::random();
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .context("binding a UDP socket")?;
    socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    socket
        .send(&lookup.message(id))
        .await
        .with_context(|| format!("sending to {server}"))?;
    let mut buf = vec![0u8; 65_535];
    let wait = async {
        loop {
            let len = socket
                .recv(&mut buf)
                .await
                .with_context(|| format!("receiving from {server}"))?;
            // A stray datagram is not the answer: keep waiting.
            if let Ok(answer) = lookup.read(id, &buf[..len]) {
                return anyhow::Ok(answer);
            }
        }
    };
    timeout(deadline, wait)
        .await
        .map_err(|_| no_answer(server, "udp", deadline))?
}

async fn ask_tcp(
    lookup: &Lookup,
    server: SocketAddr,
    deadline: Duration,
) -> anyhow::Result<Answer> {
    let id: u16 = rand::random();
    let exchange = async {
        let mut stream = TcpStream::connect(server)
            .await
            .with_context(|| format!("connecting to {server} over TCP"))?;
        write_message(&mut stream, &lookup.message(id)).await?;
        let bytes = read_answer(&mut stream).await?;
        lookup
            .read(id, &bytes)
            .with_context(|| format!("the answer from {server}"))
    };
    timeout(deadline, exchange)
        .await
        .map_err(|_| no_answer(server, "tcp", deadline))?
}

fn no_answer(server: SocketAddr, transport: &str, deadline: Duration) -> anyhow::Error {
    anyhow::anyhow!(
        "no answer from {server} over {transport} within {} ms (is the node resolver on? node.dns_resolver = true)",
        deadline.as_millis()
    )
}
