//! Security-group rules: what each role opens inbound, and how to get from
//! the rules a group has to the rules it should have.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{CONTROL_PORT, WIREGUARD_PORT};
use crate::aws::network::TAILNET_CIDR;
use crate::role::Role;

/// One inbound rule of a security group, reduced to what we compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct IngressRule {
    /// `udp`, `tcp`, `-1`.
    pub protocol: String,
    /// First port.
    pub from_port: i32,
    /// Last port.
    pub to_port: i32,
    /// An IPv4 or IPv6 CIDR.
    pub cidr: String,
}

impl IngressRule {
    fn new(protocol: &str, port: u16, cidr: &str) -> Self {
        Self {
            protocol: protocol.to_owned(),
            from_port: i32::from(port),
            to_port: i32::from(port),
            cidr: cidr.to_owned(),
        }
    }

    /// `udp 41641 from 0.0.0.0/0`.
    pub fn label(&self) -> String {
        format!("{} {} from {}", self.protocol, self.from_port, self.cidr)
    }
}

/// The appliance's inbound rules, from anywhere and nothing else: the
/// WireGuard UDP port for nodes, control's TCP port (the Noise channel
/// nodes dial) for role `control`, which runs no WireGuard node.
pub fn appliance_ingress(role: Role) -> BTreeSet<IngressRule> {
    let (protocol, port) = listen_port(role);
    [
        IngressRule::new(protocol, port, "0.0.0.0/0"),
        IngressRule::new(protocol, port, "::/0"),
    ]
    .into_iter()
    .collect()
}

/// The one port a role listens on from the internet: `("udp", 41641)` for
/// nodes, `("tcp", 8080)` for control.
pub fn listen_port(role: Role) -> (&'static str, u16) {
    match role {
        Role::Control => ("tcp", CONTROL_PORT),
        Role::SubnetRouter
        | Role::Via6
        | Role::ExitNode
        | Role::AppConnector
        | Role::Recorder
        | Role::Relay => ("udp", WIREGUARD_PORT),
    }
}

/// The resolver endpoint's inbound rules: DNS over TCP and UDP from the
/// VPC and the tailnet.
pub fn dns_ingress(vpc_cidrs: &[String]) -> BTreeSet<IngressRule> {
    let mut out = BTreeSet::new();
    for cidr in vpc_cidrs.iter().map(String::as_str).chain([TAILNET_CIDR]) {
        out.insert(IngressRule::new("tcp", 53, cidr));
        out.insert(IngressRule::new("udp", 53, cidr));
    }
    out
}

/// Rules to add and rules to remove so `actual` becomes `wanted`.
pub fn rule_diff(
    wanted: &BTreeSet<IngressRule>,
    actual: &BTreeSet<IngressRule>,
) -> (Vec<IngressRule>, Vec<IngressRule>) {
    (
        wanted.difference(actual).cloned().collect(),
        actual.difference(wanted).cloned().collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_diff_adds_missing_and_removes_extra_rules() {
        let wanted = appliance_ingress(Role::SubnetRouter);
        let mut actual = BTreeSet::new();
        actual.insert(IngressRule::new("tcp", 22, "0.0.0.0/0"));
        actual.insert(IngressRule::new("udp", WIREGUARD_PORT, "0.0.0.0/0"));
        let (add, remove) = rule_diff(&wanted, &actual);
        assert_eq!(add, vec![IngressRule::new("udp", WIREGUARD_PORT, "::/0")]);
        assert_eq!(remove, vec![IngressRule::new("tcp", 22, "0.0.0.0/0")]);
        assert_eq!(rule_diff(&wanted, &wanted), (vec![], vec![]));
        assert_eq!(remove[0].label(), "tcp 22 from 0.0.0.0/0");
    }

    #[test]
    fn control_opens_its_tcp_port_and_nodes_the_wireguard_port() {
        let control: Vec<String> = appliance_ingress(Role::Control)
            .iter()
            .map(IngressRule::label)
            .collect();
        assert_eq!(control, ["tcp 8080 from 0.0.0.0/0", "tcp 8080 from ::/0"]);
        assert_eq!(listen_port(Role::Recorder), ("udp", 41641));
    }

    #[test]
    fn dns_rules_cover_the_vpc_and_the_tailnet_over_tcp_and_udp() {
        let rules = dns_ingress(&["10.0.0.0/16".into()]);
        assert_eq!(rules.len(), 4);
        assert!(rules.contains(&IngressRule::new("tcp", 53, "100.64.0.0/10")));
    }
}
