//! What an app connector's route table costs under many names: NAMES
//! distinct names under `*.example.com` (default 10,000), each answered
//! with two addresses and a TTL of 60 s, learned one answer after another
//! over ten simulated minutes, then every route's life run out.
//!
//! ```text
//! cargo run --release -p causeway-dns --example connector-routes -- [NAMES]
//! ```
//!
//! In process, on `ConnectorRoutes` alone (no sockets). Rows, in one run:
//! - "no cap, no expiry (baseline)": routes kept forever and without a
//!   limit, which is how Tailscale's connectors behave (their issues 19295
//!   and 15525);
//! - the defaults (1,000 routes, 600 s floor), and a cap of 10,000.
//!
//! Each row prints the time per answer learned, the addresses held and
//! the prefixes advertised at the end of the ten minutes, the addresses
//! refused for the cap, the heap the table holds (counted by a global
//! allocator wrapper), and what is left one floor after the last answer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use causeway_dns::{ConnectorLimits, ConnectorRoutes, DomainPattern};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Bytes allocated and not yet freed, by everything in the process.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// counts the sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's layout is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Simulated time the answers are spread over.
const SPREAD: Duration = Duration::from_secs(600);

fn main() -> anyhow::Result<()> {
    let names: u32 = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|e| anyhow::anyhow!("NAMES must be a whole number, got {n:?}: {e}"))?,
        None => 10_000,
    };
    anyhow::ensure!(names > 0, "NAMES must be at least 1");
    let answers: Vec<Vec<u8>> = (0..names).map(answer).collect::<anyhow::Result<_>>()?;
    println!(
        "{names} names, 2 addresses each, TTL 60 s, over {} s",
        SPREAD.as_secs()
    );
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>9} {:>10} {:>11}",
        "table", "us/answer", "held", "prefixes", "refused", "heap KiB", "left after"
    );
    let forever = ConnectorLimits {
        ttl_floor: Duration::from_secs(u64::from(u32::MAX)),
        max_routes: usize::MAX,
    };
    row("no cap, no expiry (baseline)", forever, &answers)?;
    row(
        "defaults (1,000 routes, 600 s)",
        ConnectorLimits::default(),
        &answers,
    )?;
    row(
        "cap 10,000, 600 s",
        ConnectorLimits {
            max_routes: 10_000,
            ..ConnectorLimits::default()
        },
        &answers,
    )?;
    Ok(())
}

fn row(label: &str, limits: ConnectorLimits, answers: &[Vec<u8>]) -> anyhow::Result<()> {
    let domains: BTreeSet<DomainPattern> = BTreeSet::from(["*.example.com".parse()?]);
    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut table = ConnectorRoutes::new(domains, limits);
    let start = Instant::now();
    let count = u32::try_from(answers.len())?;
    let step = SPREAD / count;
    let timer = Instant::now();
    let mut now = start;
    for bytes in answers {
        table.learn(bytes, now);
        table.expire(now);
        now += step;
    }
    let elapsed = timer.elapsed();
    let held = table.len();
    let prefixes = table.routes().len();
    let heap = LIVE.load(Ordering::Relaxed) - heap_before;
    table.expire(now + limits.ttl_floor.min(Duration::from_secs(86_400)));
    println!(
        "{label:<34} {:>10.2} {held:>9} {prefixes:>9} {:>9} {:>10} {:>11}",
        elapsed.as_secs_f64() * 1e6 / f64::from(count),
        table.over_cap(),
        heap / 1024,
        table.len()
    );
    Ok(())
}

/// The answer for name *i*: two addresses in 198.18.0.0/15, two apart so
/// that they do not merge, and distinct between names.
fn answer(i: u32) -> anyhow::Result<Vec<u8>> {
    let owner = Name::from_ascii(format!("h{i}.example.com."))?;
    let mut message = Message::new(1, MessageType::Response, OpCode::Query);
    message.metadata.response_code = ResponseCode::NoError;
    message.add_query(Query::query(owner.clone(), RecordType::A));
    for k in 0..2u32 {
        let host = (i * 4 + k * 2) % (1 << 17);
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + host);
        message.add_answer(Record::from_rdata(owner.clone(), 60, RData::A(A(ip))));
    }
    Ok(message.to_vec()?)
}
