//! What 4via6 costs a router: time per translated packet each way, what a
//! plain IPv4 packet pays for the flow lookup, and the flow table's memory
//! when full.
//!
//! ```text
//! cargo run -p causeway-mesh --example via6-translate -- [PACKETS]
//! ```
//!
//! In process, on the sans-IO core (`Via6State`), with 1,420-byte UDP
//! packets (a full packet at the tailnet MTU). Memory is the growth of the
//! process's resident set while the table fills (so it includes the hash
//! table's slack and the allocator's); time depends on the build profile,
//! so say which one.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use anyhow::{Context, ensure};
use causeway_mesh::{DEFAULT_VIA6_FLOW_CAPACITY, Via6Outcome, Via6State};
use causeway_wire::via6::via6_address;
use etherparse::PacketBuilder;
use ipnet::Ipv6Net;

/// The process's resident memory in KiB (Linux `/proc/self/status`).
fn resident_kib() -> anyhow::Result<usize> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib = line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?;
    kib.parse().context("VmRSS value")
}

const PAYLOAD: usize = 1420 - 40 - 8;
const SITE: u16 = 7;

fn main() -> anyhow::Result<()> {
    let packets: u32 = match std::env::args().nth(1) {
        Some(n) => n.parse().context("PACKETS must be a whole number")?,
        None => 200_000,
    };
    let ula: Ipv6Net = "fd7a:115c:a1e0::/48".parse()?;
    let client_v4 = Ipv4Addr::new(100, 64, 0, 1);
    let client_v6: Ipv6Addr = "fd7a:115c:a1e0::1".parse()?;
    let remote = Ipv4Addr::new(10, 0, 0, 5);
    let payload = vec![0x5a; PAYLOAD];
    let now = Instant::now();

    let mut state = Via6State::new(DEFAULT_VIA6_FLOW_CAPACITY);
    state.configure(ula, &[(SITE, "10.0.0.0/16".parse()?)])?;
    let mut request = Vec::new();
    PacketBuilder::ipv6(
        client_v6.octets(),
        via6_address(ula, SITE, remote).octets(),
        64,
    )
    .udp(40_000, 443)
    .write(&mut request, &payload)?;
    let mut reply = Vec::new();
    PacketBuilder::ipv4(remote.octets(), client_v4.octets(), 63)
        .udp(443, 40_000)
        .write(&mut reply, &payload)?;
    let mut plain = Vec::new();
    PacketBuilder::ipv4(remote.octets(), client_v4.octets(), 63)
        .udp(443, 40_001)
        .write(&mut plain, &payload)?;
    let mut out = Vec::with_capacity(2048);

    let per_packet = |label: &str, run: &mut dyn FnMut() -> Via6Outcome, expect| {
        let start = Instant::now();
        for _ in 0..packets {
            let outcome = run();
            ensure!(outcome == expect, "{label}: {outcome:?}");
        }
        let ns = start.elapsed().as_nanos() / u128::from(packets.max(1));
        println!("{label}: {ns} ns a packet ({packets} packets)");
        Ok(())
    };
    per_packet(
        "IPv6 → IPv4, 1,420-byte UDP",
        &mut || state.to_ipv4(&request, Some(client_v4), &mut out, now),
        Via6Outcome::Translated,
    )?;
    per_packet(
        "IPv4 → IPv6, 1,420-byte UDP reply",
        &mut || state.to_ipv6(&reply, &mut out, now),
        Via6Outcome::Translated,
    )?;
    per_packet(
        "plain IPv4 (no flow), the lookup alone",
        &mut || state.to_ipv6(&plain, &mut out, now),
        Via6Outcome::NotVia6,
    )?;

    // The table when full: one UDP flow per client port and remote host.
    let mut table = Via6State::new(DEFAULT_VIA6_FLOW_CAPACITY);
    table.configure(ula, &[(SITE, "10.0.0.0/16".parse()?)])?;
    let before = resident_kib()?;
    let mut small = Vec::new();
    let mut flows = 0usize;
    'fill: for host in 1..=255u8 {
        for port in 1..=300u16 {
            if flows == DEFAULT_VIA6_FLOW_CAPACITY.get() {
                break 'fill;
            }
            small.clear();
            PacketBuilder::ipv6(
                client_v6.octets(),
                via6_address(ula, SITE, Ipv4Addr::new(10, 0, 1, host)).octets(),
                64,
            )
            .udp(port, 53)
            .write(&mut small, b"q")?;
            let outcome = table.to_ipv4(&small, Some(client_v4), &mut out, now);
            ensure!(
                outcome == Via6Outcome::Translated,
                "flow {flows}: {outcome:?}"
            );
            flows += 1;
        }
    }
    let kib = resident_kib()?.saturating_sub(before);
    let stats = table.stats();
    ensure!(stats.flows == flows, "{} flows tracked", stats.flows);
    println!(
        "flow table full: {flows} flows, {kib} KiB resident, {} bytes a flow",
        kib * 1024 / flows
    );
    Ok(())
}
