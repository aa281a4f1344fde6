//! Health is the appliance's, not EC2's: an instance is healthy when its
//! appliance has registered with control, holds its netmap stream (control
//! lists it online), its node key is valid and, for a router, every route
//! it should serve is approved, with exactly one primary per route across
//! the deployment. This module judges that from control's node list; it
//! does no I/O, so `deploy`'s wait and `status` share one judgement.

use causeway_wire::via6;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;

use super::api::Instance;
use super::control::NodeView;

/// What control says of one instance's appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplianceHealth {
    /// The node's name in control (none: not registered).
    pub node: Option<String>,
    /// Connected to control.
    pub online: bool,
    /// When control last heard from it (Unix seconds).
    pub last_seen: Option<i64>,
    /// When its node key expires (Unix seconds).
    pub key_expiry: Option<i64>,
    /// Routes it advertises, approved or not.
    pub routes: Vec<String>,
    /// Routes it is primary for.
    pub primary_routes: Vec<String>,
    /// What is missing, in words; empty when healthy.
    pub missing: Vec<String>,
}

impl ApplianceHealth {
    /// Nothing is missing.
    pub fn healthy(&self) -> bool {
        self.missing.is_empty()
    }

    /// Its place in an HA group: `not registered`, `primary` (for some
    /// route), `offline` (registered, not connected) or `standby`.
    pub fn ha_role(&self) -> &'static str {
        if self.node.is_none() {
            "not registered"
        } else if !self.primary_routes.is_empty() {
            "primary"
        } else if !self.online {
            "offline"
        } else {
            "standby"
        }
    }

    /// One line for people: healthy or what is missing, then what control
    /// knows (node, last seen, key expiry, primary routes).
    pub fn describe(&self) -> String {
        let verdict = if self.healthy() {
            "appliance healthy".to_owned()
        } else {
            format!("appliance NOT healthy: {}", self.missing.join("; "))
        };
        let Some(node) = &self.node else {
            return verdict;
        };
        let mut facts = vec![
            format!("node {node}"),
            if self.online { "online" } else { "offline" }.to_owned(),
        ];
        if let Some(t) = self.last_seen {
            facts.push(format!("last seen {}", timestamp(t)));
        }
        if let Some(t) = self.key_expiry {
            facts.push(format!("key expires {}", timestamp(t)));
        }
        if !self.routes.is_empty() {
            facts.push(format!("routes {}", self.routes.join(", ")));
        }
        if !self.primary_routes.is_empty() {
            facts.push(format!("primary for {}", self.primary_routes.join(", ")));
        }
        format!("{verdict} ({})", facts.join(", "))
    }
}

/// Unix seconds as RFC 3339 UTC, or the number when out of range.
fn timestamp(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The node in `nodes` that is `instance`'s appliance: the appliance
/// registers with the OS host name, which on EC2 is the private DNS name's
/// first label; the instance id and Name tag are accepted too, for images
/// that set the host name from them.
pub fn node_of<'a>(instance: &Instance, nodes: &'a [NodeView]) -> Option<&'a NodeView> {
    nodes.iter().find(|n| {
        [&n.hostname, &n.name]
            .into_iter()
            .any(|h| *h == instance.hostname || *h == instance.id || *h == instance.name)
    })
}

/// Judges every instance of a deployment. `routes` are the prefixes each
/// instance should serve (empty for roles that route nothing), or for a
/// 4via6 router its routes as `site:N:CIDR` ([`via6_route`]); a route
/// with no primary among `instances`, or with more than one, is missing
/// on every instance that serves it.
pub fn assess(
    instances: &[Instance],
    nodes: &[NodeView],
    routes: &[String],
) -> Vec<ApplianceHealth> {
    let matched: Vec<Option<&NodeView>> = instances.iter().map(|i| node_of(i, nodes)).collect();
    assess_matched(&matched, routes)
}

/// Judges the appliances of a deployment once each machine has been
/// matched to its node in control (`None`: not registered); any cloud's
/// provisioner uses this, so they all judge alike.
pub fn assess_matched(matched: &[Option<&NodeView>], routes: &[String]) -> Vec<ApplianceHealth> {
    let primaries = |prefix: &str| {
        matched
            .iter()
            .flatten()
            .filter(|n| lists(n, &n.primary_routes, prefix))
            .count()
    };
    matched
        .iter()
        .map(|node| {
            let Some(node) = node else {
                return ApplianceHealth {
                    node: None,
                    online: false,
                    last_seen: None,
                    key_expiry: None,
                    routes: Vec::new(),
                    primary_routes: Vec::new(),
                    missing: vec!["not registered with control".to_owned()],
                };
            };
            let mut missing = Vec::new();
            if !node.online {
                missing.push("not connected to control (no netmap stream)".to_owned());
            }
            if node.expired {
                missing.push("its node key has expired".to_owned());
            }
            for prefix in routes {
                if !lists(node, &node.advertised_routes, prefix) {
                    missing.push(format!("does not advertise {}", named(node, prefix)));
                } else if !lists(node, &node.approved_routes, prefix) {
                    missing.push(format!("{} is not approved", named(node, prefix)));
                } else if is_exit_route(prefix) {
                    // Every approved exit node serves at once and each
                    // client picks one: control makes none primary.
                } else {
                    match primaries(prefix) {
                        1 => {}
                        0 => missing.push(format!("no instance is primary for {prefix}")),
                        n => missing.push(format!("{n} instances are primary for {prefix}")),
                    }
                }
            }
            ApplianceHealth {
                node: Some(node.name.clone()),
                online: node.online,
                last_seen: node.last_seen,
                key_expiry: node.key_expiry,
                routes: texts(&node.advertised_routes),
                primary_routes: texts(&node.primary_routes),
                missing,
            }
        })
        .collect()
}

/// The deployment's name for the route of IPv4 range `range` at 4via6
/// site `site`: `site:N:CIDR`, as control's policy names it in
/// `autoApprovers.routes`.
pub fn via6_route(site: u16, range: &str) -> String {
    format!("site:{site}:{range}")
}

/// The site and IPv4 range a `site:N:CIDR` route names.
fn parse_via6_route(route: &str) -> Option<(u16, Ipv4Net)> {
    let (site, range) = route.strip_prefix("site:")?.split_once(':')?;
    Some((site.parse().ok()?, range.parse().ok()?))
}

/// The tailnet's /48 (where 4via6 routes live), from the node's own IPv6
/// address; none when control lists no IPv6 address for it.
pub fn node_ula(node: &NodeView) -> Option<Ipv6Net> {
    node.addresses.iter().find_map(|a| match a {
        IpNet::V6(v6) => Some(via6::tailnet_ula(v6.addr())),
        IpNet::V4(_) => None,
    })
}

/// The prefix `route` names on `node`: the prefix itself, or for a 4via6
/// route `site:N:CIDR` the site's IPv6 route in the node's tailnet (the
/// tailnet's /48 is random, so only the node's address tells it).
fn resolve(node: &NodeView, route: &str) -> Option<IpNet> {
    match parse_via6_route(route) {
        Some((site, range)) => {
            node_ula(node).map(|ula| IpNet::V6(via6::via6_prefix(ula, site, range)))
        }
        None => route.parse().ok(),
    }
}

/// How a missing route is named: as the deployment names it and, for a
/// 4via6 route, the IPv6 prefix looked for.
fn named(node: &NodeView, route: &str) -> String {
    match (parse_via6_route(route), resolve(node, route)) {
        (Some(_), Some(prefix)) => format!("{route} ({prefix})"),
        (Some(_), None) => format!("{route} (control lists no IPv6 address for the node)"),
        (None, _) => route.to_owned(),
    }
}

/// Whether `list` (one of `node`'s) holds the prefix `route` names (the
/// deployment's routes are text; control's are parsed).
fn lists(node: &NodeView, list: &[IpNet], route: &str) -> bool {
    resolve(node, route).is_some_and(|p| list.contains(&p))
}

/// The 4via6 routes among `routes` (control's, of a node in the tailnet
/// `ula`), as (site, IPv4 range, the IPv6 route).
pub fn via6_routes(ula: Ipv6Net, routes: &[IpNet]) -> Vec<(u16, Ipv4Net, Ipv6Net)> {
    routes
        .iter()
        .filter_map(|r| match r {
            IpNet::V6(v6) => {
                via6::parse_via6_prefix(ula, *v6).map(|(site, range)| (site, range, *v6))
            }
            IpNet::V4(_) => None,
        })
        .collect()
}

/// A default route (`0.0.0.0/0`, `::/0`): an exit node's.
fn is_exit_route(prefix: &str) -> bool {
    prefix.parse::<IpNet>().is_ok_and(|p| p.prefix_len() == 0)
}

fn texts(list: &[IpNet]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, hostname: &str) -> Instance {
        Instance {
            id: id.into(),
            name: format!("causeway-t-subnet-router-{id}"),
            role: "subnet-router".into(),
            state: "running".into(),
            az: "us-east-1a".into(),
            subnet: "subnet-1".into(),
            vpc: "vpc-1".into(),
            instance_type: "c7g.large".into(),
            eni: "eni-1".into(),
            private_ip: "10.0.1.5".into(),
            public_ip: None,
            template_version: Some(1),
            hostname: hostname.into(),
            source_dest_check: true,
        }
    }

    fn node(hostname: &str, online: bool, approved: bool, primary: bool) -> NodeView {
        let prefix: Vec<IpNet> = vec!["10.0.0.0/16".parse().expect("prefix")];
        NodeView {
            name: hostname.into(),
            hostname: hostname.into(),
            online,
            expired: false,
            key_expiry: Some(1_900_000_000),
            last_seen: Some(1_800_000_000),
            advertised_routes: prefix.clone(),
            approved_routes: if approved { prefix.clone() } else { Vec::new() },
            primary_routes: if primary { prefix } else { Vec::new() },
            ..NodeView::default()
        }
    }

    fn routes() -> Vec<String> {
        vec!["10.0.0.0/16".to_owned()]
    }

    #[test]
    fn a_via6_route_is_looked_up_as_the_sites_ipv6_route_in_the_nodes_tailnet() {
        let instances = [instance("i-a", "ip-10-0-1-5")];
        let wanted = [via6_route(7, "10.0.0.0/16")];
        assert_eq!(wanted, ["site:7:10.0.0.0/16"]);
        let six: Vec<IpNet> = vec!["fd7a:115c:a1e0:b1a:0:7:a00:0/112".parse().expect("prefix")];
        let mut n = node("ip-10-0-1-5", true, false, false);
        n.addresses = vec![
            "100.64.0.5/32".parse().expect("v4"),
            "fd7a:115c:a1e0::5/128".parse().expect("v6"),
        ];
        // Advertising the IPv4 range itself is not advertising the site's route.
        let health = assess(&instances, std::slice::from_ref(&n), &wanted);
        assert_eq!(
            health[0].missing,
            ["does not advertise site:7:10.0.0.0/16 (fd7a:115c:a1e0:b1a:0:7:a00:0/112)"]
        );
        n.advertised_routes = six.clone();
        let health = assess(&instances, std::slice::from_ref(&n), &wanted);
        assert_eq!(
            health[0].missing,
            ["site:7:10.0.0.0/16 (fd7a:115c:a1e0:b1a:0:7:a00:0/112) is not approved"]
        );
        n.approved_routes = six.clone();
        let health = assess(&instances, std::slice::from_ref(&n), &wanted);
        assert_eq!(
            health[0].missing,
            ["no instance is primary for site:7:10.0.0.0/16"]
        );
        n.primary_routes = six.clone();
        let health = assess(&instances, std::slice::from_ref(&n), &wanted);
        assert!(health[0].healthy(), "{:?}", health[0].missing);
        // Another site's route for the same range is not this site's.
        let health = assess(
            &instances,
            std::slice::from_ref(&n),
            &[via6_route(8, "10.0.0.0/16")],
        );
        assert!(!health[0].healthy());
        assert_eq!(
            via6_routes(node_ula(&n).expect("an IPv6 address"), &n.advertised_routes),
            [(
                7,
                "10.0.0.0/16".parse().expect("v4"),
                six[0].to_string().parse().expect("v6")
            )]
        );
        // Without an IPv6 address control's view cannot name the route.
        n.addresses.truncate(1);
        let health = assess(&instances, &[n], &wanted);
        assert_eq!(
            health[0].missing,
            ["does not advertise site:7:10.0.0.0/16 (control lists no IPv6 address for the node)"]
        );
    }

    #[test]
    fn a_pair_with_one_primary_is_healthy() {
        let instances = [
            instance("i-a", "ip-10-0-1-5"),
            instance("i-b", "ip-10-0-2-5"),
        ];
        let nodes = [
            node("ip-10-0-1-5", true, true, true),
            node("ip-10-0-2-5", true, true, false),
        ];
        let health = assess(&instances, &nodes, &routes());
        assert!(health.iter().all(ApplianceHealth::healthy), "{health:?}");
        assert_eq!(health[0].node.as_deref(), Some("ip-10-0-1-5"));
        assert_eq!(health[0].primary_routes, routes());
        assert!(health[1].primary_routes.is_empty());
    }

    #[test]
    fn each_missing_thing_is_named_on_its_instance() {
        let instances = [
            instance("i-a", "ip-10-0-1-5"),
            instance("i-b", "ip-10-0-2-5"),
            instance("i-c", "ip-10-0-3-5"),
        ];
        let mut expired = node("ip-10-0-2-5", false, false, false);
        expired.expired = true;
        let nodes = [node("ip-10-0-1-5", true, true, false), expired];
        let health = assess(&instances, &nodes, &routes());
        assert_eq!(
            health[0].missing,
            ["no instance is primary for 10.0.0.0/16"]
        );
        assert_eq!(
            health[1].missing,
            [
                "not connected to control (no netmap stream)",
                "its node key has expired",
                "10.0.0.0/16 is not approved",
            ]
        );
        assert_eq!(health[2].missing, ["not registered with control"]);
        assert_eq!(health[2].node, None);
    }

    #[test]
    fn the_ha_role_follows_registration_primary_and_connection() {
        let instances = [
            instance("i-a", "ip-10-0-1-5"),
            instance("i-b", "ip-10-0-2-5"),
            instance("i-c", "ip-10-0-3-5"),
            instance("i-d", "ip-10-0-4-5"),
        ];
        let nodes = [
            node("ip-10-0-1-5", true, true, true),
            node("ip-10-0-2-5", true, true, false),
            node("ip-10-0-3-5", false, true, false),
        ];
        let roles: Vec<_> = assess(&instances, &nodes, &routes())
            .iter()
            .map(ApplianceHealth::ha_role)
            .collect();
        assert_eq!(roles, ["primary", "standby", "offline", "not registered"]);
    }

    #[test]
    fn two_primaries_for_one_route_are_unhealthy() {
        let instances = [
            instance("i-a", "ip-10-0-1-5"),
            instance("i-b", "ip-10-0-2-5"),
        ];
        let nodes = [
            node("ip-10-0-1-5", true, true, true),
            node("ip-10-0-2-5", true, true, true),
        ];
        let health = assess(&instances, &nodes, &routes());
        assert_eq!(
            health[0].missing,
            ["2 instances are primary for 10.0.0.0/16"]
        );
    }

    #[test]
    fn exit_routes_need_approval_and_no_primary() {
        let instances = [instance("i-a", "ip-10-0-1-5")];
        let exit: Vec<IpNet> = vec![
            "0.0.0.0/0".parse().expect("prefix"),
            "::/0".parse().expect("prefix"),
        ];
        let mut n = node("ip-10-0-1-5", true, false, false);
        n.advertised_routes = exit.clone();
        let routes: Vec<String> = vec!["0.0.0.0/0".into(), "::/0".into()];
        let health = assess(&instances, std::slice::from_ref(&n), &routes);
        assert_eq!(
            health[0].missing,
            ["0.0.0.0/0 is not approved", "::/0 is not approved"]
        );
        n.approved_routes = exit;
        let health = assess(&instances, &[n], &routes);
        assert!(health[0].healthy(), "{health:?}");
        assert!(health[0].primary_routes.is_empty());
    }

    #[test]
    fn a_role_without_routes_needs_only_registration_and_its_stream() {
        let instances = [instance("i-a", "ip-10-0-1-5")];
        let mut recorder = node("ip-10-0-1-5", true, false, false);
        recorder.advertised_routes.clear();
        let health = assess(&instances, &[recorder], &[]);
        assert!(health[0].healthy(), "{health:?}");
    }

    #[test]
    fn the_line_for_people_says_what_control_knows() {
        let instances = [instance("i-a", "ip-10-0-1-5")];
        let health = assess(
            &instances,
            &[node("ip-10-0-1-5", true, true, true)],
            &routes(),
        );
        assert_eq!(
            health[0].describe(),
            "appliance healthy (node ip-10-0-1-5, online, last seen 2027-01-15T08:00:00Z, \
             key expires 2030-03-17T17:46:40Z, routes 10.0.0.0/16, primary for 10.0.0.0/16)"
        );
        let missing = assess(&instances, &[], &routes());
        assert_eq!(
            missing[0].describe(),
            "appliance NOT healthy: not registered with control"
        );
    }

    #[test]
    fn a_node_is_found_by_instance_id_or_name_as_well() {
        let i = instance("i-a", "ip-10-0-1-5");
        let by_id = node("i-a", true, true, true);
        let by_name = node("causeway-t-subnet-router-i-a", true, true, true);
        assert!(node_of(&i, std::slice::from_ref(&by_id)).is_some());
        assert!(node_of(&i, std::slice::from_ref(&by_name)).is_some());
        assert!(node_of(&i, &[node("ip-10-9-9-9", true, true, true)]).is_none());
    }
}
