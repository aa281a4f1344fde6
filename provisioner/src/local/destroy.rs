//! Removing a deployment: daemons first (so the appliance removes its own
//! TUN device, routes, policy-routing rules and nftables table), then
//! PostgreSQL, the HTTP server and the echo server, then anything else still inside the namespaces, the namespaces,
//! leftover host links and the state directory; then a check that nothing
//! is left.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::netns::{HostLinks, Netns};
use super::observe::CONTROL_KEY;
use super::process::{self, Stopped};
use super::services::{
    APPS_DNS_KEY, DNS_KEY, ECHO_KEY, HTTP_KEY, PG_KEY, Postgres, SITE2_ECHO_KEY,
};
use super::state::{DeploymentLock, DeploymentState};
use super::topology::Site;
use super::{LocalDeployment, network};

/// How long a daemon gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// What destroy did and what (if anything) it could not remove.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestroyReport {
    /// Deployment name.
    pub name: String,
    /// Whether anything of the deployment existed.
    pub existed: bool,
    /// Recorded processes and how they were stopped.
    pub stopped: BTreeMap<String, Stopped>,
    /// Unrecorded processes found in the namespaces and stopped.
    pub strays: Vec<i32>,
    /// Namespaces deleted.
    pub namespaces_deleted: Vec<String>,
    /// Temporary veths deleted from the host namespace.
    pub host_links_deleted: Vec<String>,
    /// Whether the state directory was removed.
    pub state_dir_removed: bool,
    /// Problems on the way (the rest was still attempted).
    pub errors: Vec<String>,
    /// What is still there after destroy (empty on success).
    pub leftovers: Vec<String>,
    /// How long it took.
    pub seconds: f64,
}

impl DestroyReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.existed {
            let _ = writeln!(
                out,
                "deployment {} does not exist: nothing to destroy",
                self.name
            );
            return out;
        }
        for (key, how) in &self.stopped {
            let how = match how {
                Stopped::NotRunning => "was not running",
                Stopped::Terminated => "stopped",
                Stopped::Killed => "killed after 5 s",
            };
            let _ = writeln!(out, "  {key:<9} {how}");
        }
        if !self.strays.is_empty() {
            let _ = writeln!(out, "  stopped unrecorded processes: {:?}", self.strays);
        }
        let _ = writeln!(
            out,
            "  namespaces deleted: {}",
            list(&self.namespaces_deleted)
        );
        if !self.host_links_deleted.is_empty() {
            let _ = writeln!(
                out,
                "  host links deleted: {}",
                list(&self.host_links_deleted)
            );
        }
        let _ = writeln!(
            out,
            "  state directory removed: {}",
            if self.state_dir_removed { "yes" } else { "no" }
        );
        for e in &self.errors {
            let _ = writeln!(out, "  error: {e}");
        }
        if self.leftovers.is_empty() {
            let _ = writeln!(
                out,
                "deployment {} destroyed in {:.1} s; checked: no namespace, process or host link left",
                self.name, self.seconds
            );
        } else {
            let _ = writeln!(
                out,
                "deployment {} NOT fully destroyed; left: {}",
                self.name,
                list(&self.leftovers)
            );
        }
        out
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Destroys the deployment.
pub fn run(dep: &LocalDeployment) -> anyhow::Result<DestroyReport> {
    let started = Instant::now();
    let topo = &dep.topo;
    let mut errors = Vec::new();
    let lock_file = dep.dir.lock_file();
    let lock_existed = lock_file.exists();
    let lock = DeploymentLock::acquire(&dep.dir)?;
    let state = DeploymentState::load(&dep.dir).unwrap_or_else(|e| {
        errors.push(format!("{e:#} (continuing without it)"));
        None
    });
    let ours = topo.namespaces();
    let existing: Vec<String> = Netns::list()?
        .into_iter()
        .filter(|n| ours.contains(n))
        .collect();
    let host_links = network::host_leftovers(topo)?;
    let existed = state.is_some()
        || dep.dir.root().exists()
        || !existing.is_empty()
        || !host_links.is_empty();
    let mut report = DestroyReport {
        name: dep.name().to_string(),
        existed,
        stopped: BTreeMap::new(),
        strays: Vec::new(),
        namespaces_deleted: Vec::new(),
        host_links_deleted: Vec::new(),
        state_dir_removed: false,
        errors,
        leftovers: Vec::new(),
        seconds: 0.0,
    };
    if !existed {
        drop(lock);
        if !lock_existed {
            let _ = std::fs::remove_file(&lock_file);
        }
        return Ok(report);
    }
    let records = state.map(|s| s.processes).unwrap_or_default();

    // Appliances first, clients before the routers before control, each
    // with SIGTERM so it removes its TUN device, routes and nftables table.
    for key in [
        "client",
        "exit",
        "connector",
        "router2",
        "router",
        CONTROL_KEY,
    ] {
        if let Some(rec) = records.get(key) {
            report.stopped.insert(key.into(), rec.stop(GRACE));
        }
    }
    if dep.dir.pg_data().join("PG_VERSION").is_file() {
        let pg = Postgres::new(dep.pg_bin.clone(), dep.dir.clone(), dep.netns(Site::Vpc));
        match pg.stop() {
            Ok(how) => {
                report.stopped.insert(PG_KEY.into(), how);
            }
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    for key in [
        PG_KEY,
        HTTP_KEY,
        DNS_KEY,
        ECHO_KEY,
        SITE2_ECHO_KEY,
        APPS_DNS_KEY,
    ] {
        if let Some(rec) = records.get(key)
            && rec.is_alive()
        {
            report.stopped.insert(key.into(), rec.stop(GRACE));
        } else if key != PG_KEY && records.contains_key(key) {
            report.stopped.insert(key.into(), Stopped::NotRunning);
        }
    }
    // Whatever else runs inside (a daemon whose pid was never recorded
    // because a deploy was interrupted) would keep a namespace alive.
    for name in &existing {
        let ns = Netns::new(name);
        match ns.pids() {
            Ok(pids) => {
                for pid in pids {
                    if process::stop_stray(pid, GRACE) != Stopped::NotRunning {
                        report.strays.push(pid);
                    }
                }
            }
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    for name in &existing {
        match Netns::new(name).delete() {
            Ok(()) => report.namespaces_deleted.push(name.clone()),
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    // An appliance stopped with SIGKILL cannot put back its namespace's
    // resolv.conf.
    for name in &ours {
        if let Err(e) = Netns::new(name).remove_appliance_resolv_conf() {
            report.errors.push(format!("{e:#}"));
        }
    }
    for link in host_links {
        match HostLinks.delete_if_exists(&link) {
            Ok(_) => report.host_links_deleted.push(link),
            Err(e) => report.errors.push(format!("{e:#}")),
        }
    }
    if dep.dir.root().exists() {
        match std::fs::remove_dir_all(dep.dir.root()) {
            Ok(()) => report.state_dir_removed = true,
            Err(e) => report
                .errors
                .push(format!("removing {}: {e}", dep.dir.root().display())),
        }
    }

    // The check: nothing of ours may be left.
    let now = Netns::list()?;
    for name in ours.iter().filter(|n| now.contains(n)) {
        report.leftovers.push(format!("namespace {name}"));
    }
    for (key, rec) in &records {
        if rec.is_alive() {
            report
                .leftovers
                .push(format!("process {key} (pid {})", rec.pid));
        }
    }
    for link in network::host_leftovers(topo)? {
        report.leftovers.push(format!("host link {link}"));
    }
    if dep.dir.root().exists() {
        report
            .leftovers
            .push(format!("state directory {}", dep.dir.root().display()));
    }
    if report.leftovers.is_empty() {
        let _ = std::fs::remove_file(&lock_file);
    }
    drop(lock);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
