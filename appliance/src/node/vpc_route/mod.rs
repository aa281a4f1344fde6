//! On AWS without SNAT, the VPC's route tables send the tailnet's replies
//! (`100.64.0.0/10`) to a subnet router's network interface. When control
//! makes this node the primary router (its own `primary_routes` in the
//! netmap), it points that route in each table of
//! `[subnet_router] aws_route_tables` at its own interface: EC2
//! ReplaceRoute (CreateRoute when the route is missing), all tables at
//! once, retried with backoff until done or until the node is no longer
//! primary. A table already pointing here is left alone.
//!
//! Only the IPv4 route moves: the tailnet's IPv6 addresses are a ULA that
//! the VPC does not route, so without SNAT only IPv4 VPC prefixes get
//! replies back.
//!
//! `--cloud local` has the same failover with the VPC namespace's own
//! routing table standing in for the VPC route table
//! (`[subnet_router.local_route_table]`): the primary points that
//! namespace's `100.64.0.0/10` route via its own VPC-side address.

mod decide;
mod ec2;
mod namespace;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use self::decide::RouteTableId;
use self::decide::{Step, decide, retry_delay};
use self::ec2::Ec2;
use self::namespace::Namespace;
use super::status::{self, NodeStatus, VpcRouteStatus};
use crate::cloud::{Cloud, Metadata};

/// Which route tables follow this node when it becomes primary.
#[derive(Debug, Clone)]
pub enum ReturnRoute {
    /// VPC route tables, pointed at this instance's interface.
    Aws(Vec<RouteTableId>),
    /// A network namespace's main table, pointed via `via` (this node's
    /// address on the VPC side).
    Namespace {
        /// The namespace, as `ip netns` names it.
        name: String,
        /// This router's address that the VPC namespace reaches.
        via: Ipv4Addr,
    },
}

/// One table and the API that changes it.
#[derive(Debug, Clone)]
enum Table {
    Ec2(Ec2, RouteTableId),
    Namespace(Namespace, String, Ipv4Addr),
}

impl Table {
    /// The table's name in logs and in the status (`rtb-…`, `netns:NAME`).
    fn name(&self) -> String {
        match self {
            Table::Ec2(_, id) => id.to_string(),
            Table::Namespace(_, name, _) => format!("netns:{name}"),
        }
    }

    /// Where its tailnet route points now.
    async fn observe(&self) -> anyhow::Result<decide::Seen> {
        match self {
            Table::Ec2(ec2, id) => ec2.observe(id, super::TAILNET_V4).await,
            Table::Namespace(ns, _, _) => ns.observe(tailnet_v4()).await,
        }
    }

    /// Carries out `step`, pointing the route at `target`.
    async fn apply(&self, step: &Step, target: &str) -> anyhow::Result<()> {
        match (self, step) {
            (_, Step::Keep) => Ok(()),
            (Table::Ec2(ec2, id), Step::Replace { .. }) => {
                ec2.replace(id, super::TAILNET_V4, target).await
            }
            (Table::Ec2(ec2, id), Step::Create) => ec2.create(id, super::TAILNET_V4, target).await,
            (Table::Namespace(ns, _, via), Step::Replace { .. } | Step::Create) => {
                ns.point(tailnet_v4(), *via).await
            }
        }
    }
}

fn tailnet_v4() -> Ipv4Net {
    super::TAILNET_V4
        .parse()
        .expect("TAILNET_V4 is a valid IPv4 prefix")
}

/// Follows `primary` (the prefixes control made this node primary for;
/// re-sent on every full map) until its sender is dropped: whenever it is
/// not empty, points the tailnet route of every table at this node.
/// Progress and errors show in the status, per table.
pub async fn follow(
    route: ReturnRoute,
    primary: watch::Receiver<Vec<IpNet>>,
    node_status: Arc<Mutex<NodeStatus>>,
) {
    let report = Report {
        status: node_status,
    };
    let (tables, target) = match route {
        ReturnRoute::Aws(ids) => {
            for id in &ids {
                report.set(
                    &id.to_string(),
                    false,
                    "starting: reading this instance's interface",
                );
            }
            let ec2 = Ec2::connect().await;
            let names: Vec<String> = ids.iter().map(ToString::to_string).collect();
            let eni = interface_id(&names, &report).await;
            let tables = ids
                .into_iter()
                .map(|id| Table::Ec2(ec2.clone(), id))
                .collect();
            (tables, eni)
        }
        ReturnRoute::Namespace { name, via } => {
            let ns = open_namespace(&name, &report).await;
            (vec![Table::Namespace(ns, name, via)], via.to_string())
        }
    };
    follow_tables(tables, target, primary, report).await;
}

/// Opens the namespace, retrying until it exists.
async fn open_namespace(name: &str, report: &Report) -> Namespace {
    let table = format!("netns:{name}");
    let mut failures = 0;
    loop {
        match Namespace::open(name).await {
            Ok(ns) => return ns,
            Err(e) => {
                failures += 1;
                let delay = retry_delay(failures);
                let error = format!("{e:#}");
                tracing::warn!(%table, error = %error, retry_ms = delay.as_millis(), "opening the VPC namespace");
                report.set(
                    &table,
                    false,
                    &format!("{error} (retry in {})", secs(delay)),
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The loop of [`follow`], once the tables and this node's `target` (its
/// interface ID, or its address) are known.
async fn follow_tables(
    tables: Vec<Table>,
    target: String,
    mut primary: watch::Receiver<Vec<IpNet>>,
    report: Report,
) {
    // Before anything is asked of this node: where each table points now,
    // shown while it is standby (an error there, such as a missing
    // permission, shows before a failover needs the table). The first call
    // also fetches the instance role's credentials, which the failover
    // then does not wait for.
    let mut at_start = BTreeMap::new();
    for table in &tables {
        let name = table.name();
        let seen = match table.observe().await {
            Ok(seen) => (true, describe(&seen, &target)),
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(table = %name, error = %error, "reading a VPC route table");
                (false, error)
            }
        };
        at_start.insert(name, seen);
    }
    loop {
        let is_primary = !primary.borrow_and_update().is_empty();
        if is_primary {
            let began = Instant::now();
            let mut moving = JoinSet::new();
            for table in &tables {
                moving.spawn(converge(
                    table.clone(),
                    target.clone(),
                    report.clone(),
                    began,
                ));
            }
            let done = tokio::select! {
                () = drain(&mut moving) => true,
                changed = primary.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    false
                }
            };
            if !done {
                // Primary again (a fresh full map) or not any more:
                // start over from what the tables say now.
                moving.abort_all();
                continue;
            }
        } else {
            for (table, (ok, seen)) in &at_start {
                report.set(
                    table,
                    *ok,
                    &format!(
                        "standby, the primary points this route at itself (when this node started: {seen})"
                    ),
                );
            }
        }
        if primary.changed().await.is_err() {
            return;
        }
    }
}

/// Runs until every task in `set` ended.
async fn drain(set: &mut JoinSet<()>) {
    while set.join_next().await.is_some() {}
}

/// This instance's primary interface, asked of IMDSv2 until it answers.
async fn interface_id(tables: &[String], report: &Report) -> String {
    let metadata = Metadata::new(Cloud::Aws);
    let mut failures = 0;
    loop {
        match metadata.primary_interface_id().await {
            Ok(eni) => {
                tracing::info!(%eni, tables = tables.len(), "VPC return route: this instance's interface");
                return eni;
            }
            Err(e) => {
                failures += 1;
                let delay = retry_delay(failures);
                let error = format!("{e:#}");
                tracing::warn!(error = %error, retry_ms = delay.as_millis(), "reading this instance's interface");
                for table in tables {
                    report.set(table, false, &format!("{error} (retry in {})", secs(delay)));
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Points `table`'s tailnet route at `eni` (this node's interface or
/// address), retrying until it does.
async fn converge(api: Table, eni: String, report: Report, began: Instant) {
    let name = api.name();
    let table = &name;
    let mut failures = 0;
    loop {
        match attempt(&api, &eni).await {
            Ok(step) => {
                let elapsed = began.elapsed();
                let detail = match &step {
                    Step::Keep => {
                        tracing::debug!(%table, target = %eni, "VPC return route already points here");
                        format!("{} -> {eni} (this node), unchanged", super::TAILNET_V4)
                    }
                    Step::Replace { from } => {
                        let from = from.as_deref().unwrap_or("a deleted target");
                        tracing::info!(%table, %from, target = %eni, elapsed_ms = elapsed.as_millis(), attempts = failures + 1, "VPC return route moved here");
                        format!(
                            "{} -> {eni} (this node), moved from {from} in {} ms",
                            super::TAILNET_V4,
                            elapsed.as_millis()
                        )
                    }
                    Step::Create => {
                        tracing::info!(%table, target = %eni, elapsed_ms = elapsed.as_millis(), attempts = failures + 1, "VPC return route created");
                        format!(
                            "{} -> {eni} (this node), created in {} ms",
                            super::TAILNET_V4,
                            elapsed.as_millis()
                        )
                    }
                };
                report.set(table, true, &detail);
                return;
            }
            Err(e) => {
                failures += 1;
                let delay = retry_delay(failures);
                let error = format!("{e:#}");
                tracing::warn!(%table, error = %error, attempt = failures, retry_ms = delay.as_millis(), "pointing the VPC return route here");
                report.set(
                    table,
                    false,
                    &format!("{error} (attempt {failures}, retry in {})", secs(delay)),
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One round for one table: read it, decide, change it if needed.
async fn attempt(table: &Table, eni: &str) -> anyhow::Result<Step> {
    let seen = table.observe().await?;
    let step = decide(eni, &seen);
    table.apply(&step, eni).await?;
    Ok(step)
}

/// A table's route in words, from this node's point of view.
fn describe(seen: &decide::Seen, eni: &str) -> String {
    match seen {
        decide::Seen::NoRoute => format!("no {} route", super::TAILNET_V4),
        decide::Seen::Route(Some(t)) if t == eni => {
            format!("{} -> {t} (this node)", super::TAILNET_V4)
        }
        decide::Seen::Route(Some(t)) => format!("{} -> {t}", super::TAILNET_V4),
        decide::Seen::Route(None) => format!("{} -> a deleted target", super::TAILNET_V4),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Writes per-table results into the node's status.
#[derive(Debug, Clone)]
struct Report {
    status: Arc<Mutex<NodeStatus>>,
}

impl Report {
    fn set(&self, table: &str, ok: bool, detail: &str) {
        status::set(&self.status, |s| {
            s.vpc_routes.insert(
                table.to_owned(),
                VpcRouteStatus {
                    ok,
                    detail: detail.to_owned(),
                },
            );
        });
    }
}
