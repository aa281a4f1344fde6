//! App connector benchmark: thousands of names through a real connector.
//!
//! Deploys the local topology with the connector of `causeway_e2e::connector`
//! serving `*.apps.example`, whose resolver knows `--names` names (each its
//! own address), then asks every name once with dnsperf:
//!
//! - baseline: from the connector's namespace, straight to the apps'
//!   resolver (no mesh, no connector);
//! - through the connector: from the client's namespace, to the
//!   connector's tailnet address through the mesh. The first `max_routes`
//!   names each teach a route, and each such answer waits until control
//!   has made the connector primary for it; later names are answered but
//!   over the cap.
//!
//! Then it asks the same names again for `--seconds` (every address is now
//! known or refused: no waits), and reports the connector's memory, the
//! routes it holds and advertises, and how many control approved.
//!
//! Run as root after `cargo build --release --bins`:
//! `target/release/connector-bench --names 10000`. Figures in
//! docs/benchmarks.md.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use causeway_e2e::connector::{self, APPS_RESOLVER, strings};
use causeway_e2e::local::Site;
use causeway_e2e::{TestDeployment, WAIT, run, tailnet_ipv4, wait_until};
use clap::Parser;

/// The first app address; names get consecutive ones inside
/// `connector::APPS_RANGE` (198.18.64.0/18).
const FIRST_APP: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 0);
/// Addresses in that range.
const MAX_NAMES: u32 = 16_384;
/// The stride between consecutive names' addresses.
const SCATTER: u32 = 7_919;

#[derive(Parser)]
#[command(about = "App connector benchmark: many names through a real connector")]
struct Args {
    /// Distinct names under apps.example (at most 16384).
    #[arg(long, default_value_t = 10_000)]
    names: u32,
    /// The connector's `max_routes`.
    #[arg(long, default_value_t = 1_000)]
    max_routes: usize,
    /// Seconds of the second, steady pass.
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// dnsperf's outstanding queries (the connector admits 32 per source).
    #[arg(long, default_value_t = 16)]
    outstanding: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.names == 0 || args.names > MAX_NAMES {
        bail!("--names {}: expected 1 to {MAX_NAMES}", args.names);
    }
    if !(1..=32).contains(&args.outstanding) {
        bail!("--outstanding {}: expected 1 to 32", args.outstanding);
    }
    let mut t = TestDeployment::deploy();
    // Scattered over the range (an odd stride is a permutation modulo a
    // power of two), so that neighbours are adjacent only by chance, as
    // real services' addresses are.
    let hosts: Vec<(String, String)> = (0..args.names)
        .map(|i| {
            let offset = i.wrapping_mul(SCATTER) % MAX_NAMES;
            (
                format!("n{i}"),
                Ipv4Addr::from(u32::from(FIRST_APP) + offset).to_string(),
            )
        })
        .collect();
    let site = connector::start(
        &mut t,
        &hosts,
        &[],
        3600,
        &format!(
            "domains = [\"*.apps.example\"]\nmax_routes = {}",
            args.max_routes
        ),
    );
    let connector_ip = tailnet_ipv4(&site.status)?;
    let pid = t.process("connector").pid;
    let root = t.dep().paths().root().to_owned();
    let queries = root.join("names.txt");
    let text: String = hosts
        .iter()
        .map(|(name, _)| format!("{name}.{} A\n", connector::APPS_ZONE))
        .collect();
    std::fs::write(&queries, text).context("writing the query file")?;
    let queries = queries.to_str().context("a UTF-8 path")?.to_owned();
    let rss_idle = rss_kib(pid)?;

    let once = |mut cmd: Command, server: &str| {
        cmd.args(["-s", server, "-d", &queries, "-n", "1"])
            .args(["-q", &args.outstanding.to_string()]);
        dnsperf(cmd)
    };
    let baseline = once(site.ns.command("dnsperf"), APPS_RESOLVER)?;
    let started = Instant::now();
    let learning = once(t.command_in(Site::Cli, "dnsperf"), &connector_ip)?;
    let learned_in = started.elapsed();
    let rss_learned = rss_kib(pid)?;

    let timed = |mut cmd: Command, server: &str| {
        cmd.args(["-s", server, "-d", &queries])
            .args(["-l", &args.seconds.to_string()])
            .args(["-q", &args.outstanding.to_string()]);
        dnsperf(cmd)
    };
    let baseline_steady = timed(site.ns.command("dnsperf"), APPS_RESOLVER)?;
    let steady = timed(t.command_in(Site::Cli, "dnsperf"), &connector_ip)?;
    let rss_steady = rss_kib(pid)?;

    let status = site.status(&t)?;
    let held = &status["app_connector"];
    let advertised = strings(&status["advertised_routes"]);
    let approved = wait_until(WAIT, "control to approve the connector's routes", || {
        let nodes = t.nodes();
        let approved = nodes
            .iter()
            .find(|n| n["name"] == "connector")
            .map(|n| strings(&n["approved_routes"]).len())
            .unwrap_or_default();
        anyhow::ensure!(
            approved == advertised.len(),
            "{approved} of {}",
            advertised.len()
        );
        Ok(approved)
    });

    println!(
        "app connector, {} names, max_routes {}, {} outstanding queries",
        args.names, args.max_routes, args.outstanding
    );
    println!("pass                               qps     avg ms   completed/sent  lost");
    for (label, r) in [
        ("each name once, direct (baseline)", &baseline),
        ("each name once, through connector", &learning),
        ("steady, direct (baseline)", &baseline_steady),
        ("steady, through connector", &steady),
    ] {
        println!(
            "{label:<34} {:>7.0} {:>9.3} {:>8}/{:<8} {:>4}",
            r.qps, r.avg_ms, r.completed, r.sent, r.lost
        );
    }
    println!(
        "first pass through the connector took {:.1} s (answers that taught a route wait for control)",
        learned_in.as_secs_f64()
    );
    println!(
        "connector: {} addresses held (cap {}), {} refused over the cap, {} advertised prefixes, {approved} approved by control",
        held["addresses"],
        held["max_routes"],
        held["over_cap"],
        advertised.len()
    );
    println!(
        "connector RSS: {rss_idle} KiB idle, {rss_learned} KiB after the first pass, {rss_steady} KiB after the steady pass"
    );
    t.finish();
    Ok(())
}

/// What dnsperf reported.
struct Perf {
    sent: u64,
    completed: u64,
    lost: u64,
    qps: f64,
    avg_ms: f64,
}

/// Runs dnsperf and reads its summary.
fn dnsperf(mut cmd: Command) -> anyhow::Result<Perf> {
    let ran = run(&mut cmd, Duration::from_secs(600));
    if !ran.success() {
        bail!("dnsperf failed: {ran}");
    }
    let field = |label: &str| -> anyhow::Result<f64> {
        let line = ran
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .with_context(|| format!("no {label:?} in dnsperf's output: {}", ran.stdout))?;
        let value = line
            .split_once(':')
            .map(|(_, v)| v.split_whitespace().next().unwrap_or_default())
            .unwrap_or_default();
        value
            .parse()
            .with_context(|| format!("{label:?}: {value:?} is not a number"))
    };
    Ok(Perf {
        sent: field("Queries sent")? as u64,
        completed: field("Queries completed")? as u64,
        lost: field("Queries lost")? as u64,
        qps: field("Queries per second")?,
        avg_ms: field("Average Latency (s)")? * 1000.0,
    })
}

/// The resident memory of `pid`, from `/proc/PID/status`.
fn rss_kib(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}
