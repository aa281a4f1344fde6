//! Which subnet router is primary, by control's word: its admin API's node
//! list (asked with `appliance admin --json nodes list` inside the control
//! namespace, where the admin API listens), judged by the same code as
//! `--cloud aws` ([`crate::aws::health`]).

use std::fmt::Write as _;

use causeway_wire::admin::NodeView;
use serde::Serialize;

use super::state::{DeploymentState, Node};
use super::topology::{Site, VPC_SUBNET};
use super::{LocalDeployment, node_site};
use crate::aws::health::{self, ApplianceHealth};

/// One subnet router of a local deployment and its place in the HA group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouterStatus {
    /// `router` or `router2` (its host name and process key).
    pub node: Node,
    /// Its namespace.
    pub namespace: String,
    /// Its pid as `state.json` records it (none: never started).
    pub pid: Option<i32>,
    /// Whether that process runs.
    pub alive: bool,
    /// `primary`, `standby`, `offline`, `not registered`, or `unknown`
    /// (control did not answer).
    pub ha_role: String,
    /// What control says of it.
    pub appliance: Option<ApplianceHealth>,
}

/// Each router of `dep` with its HA role. Asking control may fail (it is
/// down): then every role is `unknown` and the error is returned beside.
pub fn routers(dep: &LocalDeployment) -> (Vec<RouterStatus>, Option<String>) {
    let state = dep.state().ok().flatten();
    let nodes = control_nodes(dep);
    let routers: Vec<Node> = dep.nodes().into_iter().filter(|n| n.is_router()).collect();
    let judged: Option<Vec<ApplianceHealth>> = nodes.as_ref().ok().map(|nodes| {
        let matched: Vec<Option<&NodeView>> = routers
            .iter()
            .map(|r| nodes.iter().find(|n| n.hostname == r.as_str()))
            .collect();
        health::assess_matched(&matched, &[VPC_SUBNET.to_owned()])
    });
    let out = routers
        .iter()
        .enumerate()
        .map(|(i, &node)| {
            let record = state.as_ref().and_then(|s| process_of(s, node));
            let appliance = judged.as_ref().map(|j| j[i].clone());
            RouterStatus {
                node,
                namespace: dep.namespace(node_site(node)),
                pid: record.map(|r| r.pid),
                alive: record.is_some_and(|r| r.is_alive()),
                ha_role: appliance
                    .as_ref()
                    .map_or("unknown", ApplianceHealth::ha_role)
                    .to_owned(),
                appliance,
            }
        })
        .collect();
    (out, nodes.err().map(|e| format!("{e:#}")))
}

/// The primary among `routers`, if exactly one is.
pub fn sole_primary(routers: &[RouterStatus]) -> Option<&RouterStatus> {
    let mut primaries = routers.iter().filter(|r| r.ha_role == "primary");
    match (primaries.next(), primaries.next()) {
        (Some(p), None) => Some(p),
        _ => None,
    }
}

/// One line naming the primary and the others' roles, e.g. `primary for
/// 198.19.1.0/24: router (cw-demo-rtr); router2 (cw-demo-rtr2) standby`.
pub fn describe(routers: &[RouterStatus]) -> String {
    let mut out = match sole_primary(routers) {
        Some(p) => format!(
            "primary for {VPC_SUBNET}: {} ({})",
            p.node.as_str(),
            p.namespace
        ),
        None => format!("no single primary for {VPC_SUBNET}"),
    };
    for r in routers {
        if sole_primary(routers).is_some_and(|p| p.node == r.node) {
            continue;
        }
        let _ = write!(out, "; {} ({}) {}", r.node.as_str(), r.namespace, r.ha_role);
    }
    out
}

/// Every node control knows, by its admin API.
pub(super) fn control_nodes(dep: &LocalDeployment) -> anyhow::Result<Vec<NodeView>> {
    let app = dep.appliance_or_err()?;
    app.nodes(&dep.netns(Site::Ctl), &dep.paths().admin_token())
}

fn process_of(state: &DeploymentState, node: Node) -> Option<&super::ProcessRecord> {
    state.processes.get(node.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(node: Node, role: &str) -> RouterStatus {
        RouterStatus {
            node,
            namespace: format!("cw-t-{}", node_site(node).suffix()),
            pid: Some(1),
            alive: true,
            ha_role: role.to_owned(),
            appliance: None,
        }
    }

    #[test]
    fn names_the_single_primary_then_the_others() {
        let pair = [
            router(Node::Router, "offline"),
            router(Node::Router2, "primary"),
        ];
        assert_eq!(sole_primary(&pair).map(|r| r.node), Some(Node::Router2));
        assert_eq!(
            describe(&pair),
            "primary for 198.19.1.0/24: router2 (cw-t-rtr2); router (cw-t-rtr) offline"
        );
    }

    #[test]
    fn two_primaries_or_none_is_no_single_primary() {
        let both = [
            router(Node::Router, "primary"),
            router(Node::Router2, "primary"),
        ];
        assert!(sole_primary(&both).is_none());
        let none = [
            router(Node::Router, "standby"),
            router(Node::Router2, "unknown"),
        ];
        assert_eq!(
            describe(&none),
            "no single primary for 198.19.1.0/24; router (cw-t-rtr) standby; router2 (cw-t-rtr2) unknown"
        );
    }
}
