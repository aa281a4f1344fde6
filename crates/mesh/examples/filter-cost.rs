//! Per-packet cost of the packet filter on the receive path, with 1, 100
//! and 10,000 rules, beside the cost with no filter in the same run.
//!
//! ```text
//! cargo run --release -p causeway-mesh --example filter-cost -- [PACKETS]
//! ```
//!
//! In process, on [`PacketFilterState`] alone (no WireGuard): each row
//! judges PACKETS (default 2,000,000) IPv4 TCP packets of 40 bytes (headers only) and
//! prints nanoseconds per packet. Rules are what control compiles for a
//! node that many peers may reach: rule *i* lets 100.64.x.y (peer *i*)
//! reach this node's TCP port 22. Rows: a SYN from the peer of the last
//! rule (allowed by a rule), a SYN from an address no rule names (refused),
//! a reply on a flow this node opened (connection tracking), and the worst
//! case for the source index, every rule from any source (`*`) to a
//! different port with the packet matching the last one.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use causeway_mesh::{DEFAULT_FLOW_CAPACITY, PacketFilterState};
use causeway_wire::{FilterDestination, FilterRule, PacketFilter, PortRange};
use etherparse::PacketBuilder;

const ME: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

fn main() -> anyhow::Result<()> {
    let packets: u32 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|e| anyhow::anyhow!("PACKETS must be a whole number, got {n:?}: {e}"))?,
        None => 2_000_000,
    };
    println!("{:<44} {:>10}", "filter", "ns/packet");
    let now = Instant::now();
    let mut state = PacketFilterState::new(DEFAULT_FLOW_CAPACITY);
    let syn = tcp(peer(0), ME, (40000, 22), true)?;
    row("no filter (baseline)", &mut state, &syn, packets, now)?;
    for count in [1u32, 100, 10_000] {
        let rules = (0..count)
            .map(|i| rule(IpAddr::V4(peer(i)), 32, 22))
            .collect();
        state.set_filter(Some(&PacketFilter { rules }));
        let allowed = tcp(peer(count - 1), ME, (40000, 22), true)?;
        row(
            &format!("{count} rules, SYN allowed by the last rule"),
            &mut state,
            &allowed,
            packets,
            now,
        )?;
        let stranger = tcp(Ipv4Addr::new(100, 100, 0, 1), ME, (40000, 22), true)?;
        row(
            &format!("{count} rules, SYN from no rule's source"),
            &mut state,
            &stranger,
            packets,
            now,
        )?;
        state.outbound(&tcp(ME, peer(7), (50000, 443), true)?, now);
        let reply = tcp(peer(7), ME, (443, 50000), false)?;
        row(
            &format!("{count} rules, reply on a tracked flow"),
            &mut state,
            &reply,
            packets,
            now,
        )?;
    }
    let rules = (0..10_000u16)
        .map(|i| rule(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0, 1000 + i))
        .collect();
    state.set_filter(Some(&PacketFilter { rules }));
    let last = tcp(peer(1), ME, (40000, 1000 + 9_999), true)?;
    row(
        "10000 rules from *, SYN allowed by the last",
        &mut state,
        &last,
        packets / 100,
        now,
    )?;
    Ok(())
}

/// Judges `packet` `n` times and prints the mean cost.
fn row(
    name: &str,
    state: &mut PacketFilterState,
    packet: &[u8],
    n: u32,
    now: Instant,
) -> anyhow::Result<()> {
    let verdict = state.inbound(packet, now);
    let start = Instant::now();
    for _ in 0..n {
        black_box(state.inbound(black_box(packet), now)).ok();
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(n);
    let outcome = if verdict.is_ok() { "pass" } else { "drop" };
    println!("{name:<44} {ns:>10.1}  ({outcome})");
    Ok(())
}

/// Peer `i`'s address: 100.64.0.2 onwards.
fn peer(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 2)) + i)
}

fn rule(source: IpAddr, len: u8, port: u16) -> FilterRule {
    FilterRule {
        sources: vec![ipnet::IpNet::new(source, len).expect("prefix length fits the family")],
        destinations: vec![FilterDestination {
            prefix: ipnet::IpNet::new(IpAddr::V4(ME), 32).expect("a /32 is valid"),
            ports: PortRange {
                first: port,
                last: port,
            },
        }],
        protocols: vec![6],
    }
}

fn tcp(
    source: Ipv4Addr,
    destination: Ipv4Addr,
    ports: (u16, u16),
    syn: bool,
) -> anyhow::Result<Vec<u8>> {
    let builder = PacketBuilder::ipv4(source.octets(), destination.octets(), 64)
        .tcp(ports.0, ports.1, 1, 1000);
    let builder = if syn { builder.syn() } else { builder.ack(1) };
    let mut out = Vec::new();
    builder.write(&mut out, &[])?;
    Ok(out)
}
