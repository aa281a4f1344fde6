//! Waiting for instances and their appliances: states polled every 2 s,
//! each change shown as a progress line, until a check says done or a
//! deadline passes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::api::{Aws, Instance};
use super::control::AdminApi;
use super::health::{self, ApplianceHealth};
use crate::console::Progress;

/// How a wait ended without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited {
    /// The check said done.
    Done,
    /// The deadline passed; the last states, as shown.
    TimedOut(String),
}

/// Polls the states of `ids` until `done` returns true for them (it may
/// fail, e.g. on an instance that died) or `timeout` passes. An instance
/// EC2 no longer lists is shown as `missing`.
pub async fn instances(
    aws: &Aws,
    ids: &[String],
    timeout: Duration,
    missing: &str,
    progress: &mut Progress,
    mut done: impl FnMut(&BTreeMap<String, String>) -> anyhow::Result<bool>,
) -> anyhow::Result<Waited> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let states = aws.instance_states(ids).await?;
        let line = ids
            .iter()
            .map(|id| format!("{id}: {}", states.get(id).map_or(missing, String::as_str)))
            .collect::<Vec<_>>()
            .join(", ");
        if line != last {
            progress.detail(&line);
            last = line;
        }
        if done(&states)? {
            return Ok(Waited::Done);
        }
        if started.elapsed() > timeout {
            return Ok(Waited::TimedOut(last));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Polls control's node list every 2 s until every instance's appliance is
/// healthy ([`health::assess`]) or `timeout` passes; each change in what
/// is missing is shown as a progress line. Returns the last judgement,
/// healthy or not. A failing admin API call ends the wait with its error.
pub async fn appliances(
    admin: &AdminApi,
    instances: &[Instance],
    routes: &[String],
    timeout: Duration,
    progress: &mut Progress,
) -> anyhow::Result<Vec<ApplianceHealth>> {
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let nodes = admin.nodes().await?;
        let judged = health::assess(instances, &nodes, routes);
        let line = instances
            .iter()
            .zip(&judged)
            .map(|(i, h)| match h.missing.as_slice() {
                [] => format!("{}: healthy", i.id),
                missing => format!("{}: {}", i.id, missing.join("; ")),
            })
            .collect::<Vec<_>>()
            .join(", ");
        if line != last {
            progress.detail(&line);
            last = line;
        }
        if judged.iter().all(ApplianceHealth::healthy) || started.elapsed() > timeout {
            return Ok(judged);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
