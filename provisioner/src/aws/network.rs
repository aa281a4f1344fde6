//! The VPC as the provisioner sees it, and the choices made from it:
//! which subnets get the instances, which address is the VPC resolver,
//! which route tables need a return route. Pure functions over plain data.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Serialize;

/// The tailnet's CGNAT range: the return route when SNAT is off.
pub const TAILNET_CIDR: &str = "100.64.0.0/10";

/// How a subnet reaches the internet, from its route table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exposure {
    /// `0.0.0.0/0 → igw-…`: direct WireGuard connections work.
    Public,
    /// `0.0.0.0/0 → nat-…` (or another target): peers reach the router only
    /// through relays.
    Nat,
    /// No default route at all.
    Isolated,
}

/// A subnet of the VPC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subnet {
    /// `subnet-…`.
    pub id: String,
    /// Availability zone.
    pub az: String,
    /// IPv4 CIDR.
    pub cidr: String,
    /// Free IPv4 addresses.
    pub free_ips: u32,
    /// How it reaches the internet.
    pub exposure: Exposure,
}

/// A route of a route table, reduced to what we branch on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination IPv4 CIDR.
    pub destination: String,
    /// `igw-…`, `nat-…`, `eni-…`, `local`, …
    pub target: String,
}

/// A route table of the VPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    /// `rtb-…`.
    pub id: String,
    /// Whether it is the VPC's main table (used by unassociated subnets).
    pub main: bool,
    /// Subnets explicitly associated.
    pub subnet_ids: Vec<String>,
    /// Its routes.
    pub routes: Vec<Route>,
}

/// The subnets chosen for the instances, one per AZ, and a warning when
/// direct connections will not work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubnetChoice {
    /// One per instance, in instance order.
    pub subnets: Vec<Subnet>,
    /// Set when a chosen subnet is not public.
    pub warning: Option<String>,
}

/// Why no subnets could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The VPC has no subnets.
    #[error("--vpc {0} has no subnets; create at least one (two in distinct AZs for --ha)")]
    NoSubnets(String),
    /// `--ha` needs two AZs.
    #[error(
        "--ha needs subnets in two availability zones, but --vpc {vpc} has subnets only in {azs}"
    )]
    OneAz {
        /// The VPC.
        vpc: String,
        /// The AZs it has.
        azs: String,
    },
    /// A CIDR could not be parsed.
    #[error("VPC CIDR {0:?} is not an IPv4 prefix")]
    BadCidr(String),
}

/// How each subnet reaches the internet, from the table associated with it
/// (or the main table).
pub fn exposure_of(subnet_id: &str, tables: &[RouteTable]) -> Exposure {
    let table = tables
        .iter()
        .find(|t| t.subnet_ids.iter().any(|s| s == subnet_id))
        .or_else(|| tables.iter().find(|t| t.main));
    let Some(table) = table else {
        return Exposure::Isolated;
    };
    match table.routes.iter().find(|r| r.destination == "0.0.0.0/0") {
        Some(r) if r.target.starts_with("igw-") => Exposure::Public,
        Some(_) => Exposure::Nat,
        None => Exposure::Isolated,
    }
}

/// Chooses `count` subnets in distinct AZs: public before NAT before
/// isolated, then the AZ name; within an AZ the best exposure, the most free
/// addresses, then the id.
pub fn choose_subnets(
    vpc: &str,
    subnets: &[Subnet],
    count: usize,
) -> Result<SubnetChoice, NetworkError> {
    if subnets.is_empty() {
        return Err(NetworkError::NoSubnets(vpc.to_owned()));
    }
    let mut best_per_az: BTreeMap<&str, &Subnet> = BTreeMap::new();
    for s in subnets {
        let better = match best_per_az.get(s.az.as_str()) {
            None => true,
            Some(cur) => {
                (s.exposure, std::cmp::Reverse(s.free_ips), &s.id)
                    < (cur.exposure, std::cmp::Reverse(cur.free_ips), &cur.id)
            }
        };
        if better {
            best_per_az.insert(&s.az, s);
        }
    }
    if best_per_az.len() < count {
        let azs: Vec<&str> = best_per_az.keys().copied().collect();
        return Err(NetworkError::OneAz {
            vpc: vpc.to_owned(),
            azs: azs.join(", "),
        });
    }
    let mut ranked: Vec<&Subnet> = best_per_az.into_values().collect();
    ranked.sort_by(|a, b| (a.exposure, &a.az).cmp(&(b.exposure, &b.az)));
    let chosen: Vec<Subnet> = ranked.into_iter().take(count).cloned().collect();
    let notes: Vec<String> = chosen
        .iter()
        .filter_map(|s| match s.exposure {
            Exposure::Public => None,
            Exposure::Nat => Some(format!(
                "{} ({}) is behind a NAT gateway: peers will reach the router only through relays, not directly",
                s.id, s.az
            )),
            Exposure::Isolated => Some(format!(
                "{} ({}) has no default route: the appliance cannot reach control or peers unless the VPC has another path",
                s.id, s.az
            )),
        })
        .collect();
    let warning = (!notes.is_empty()).then(|| {
        format!(
            "no public subnet (0.0.0.0/0 -> internet gateway) available: {}",
            notes.join("; ")
        )
    });
    Ok(SubnetChoice {
        subnets: chosen,
        warning,
    })
}

/// The Amazon-provided VPC resolver: the VPC CIDR's base address plus two.
pub fn vpc_resolver(cidr: &str) -> Result<Ipv4Addr, NetworkError> {
    let bad = || NetworkError::BadCidr(cidr.to_owned());
    let (base, len) = cidr.split_once('/').ok_or_else(bad)?;
    let base: Ipv4Addr = base.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    if len > 30 {
        return Err(bad());
    }
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Ok(Ipv4Addr::from((u32::from(base) & mask) + 2))
}

/// What to do to one route table's tailnet route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Add `100.64.0.0/10 → eni`.
    Create {
        /// Table.
        table: String,
        /// Target ENI.
        eni: String,
    },
    /// The route points elsewhere: point it at `eni`.
    Replace {
        /// Table.
        table: String,
        /// Target ENI.
        eni: String,
    },
    /// Remove the route (SNAT back on).
    Delete {
        /// Table.
        table: String,
    },
}

/// The changes that make every route table's tailnet route point at `eni`
/// (SNAT off), or remove routes pointing at one of `ours` (SNAT on).
/// With SNAT off, a route already pointing at one of `ours` stays: the
/// HA primary points it at itself (the appliance's `aws_route_tables`),
/// and deploy must not move it back. A tailnet route to something not
/// ours is left alone when SNAT is on.
pub fn tailnet_route_changes(
    tables: &[RouteTable],
    want: Option<&str>,
    ours: &[String],
) -> Vec<RouteChange> {
    let mut out = Vec::new();
    for t in tables {
        let current = t.routes.iter().find(|r| r.destination == TAILNET_CIDR);
        match (want, current) {
            (Some(eni), None) => out.push(RouteChange::Create {
                table: t.id.clone(),
                eni: eni.to_owned(),
            }),
            (Some(eni), Some(r)) if r.target != eni && !ours.contains(&r.target) => {
                out.push(RouteChange::Replace {
                    table: t.id.clone(),
                    eni: eni.to_owned(),
                });
            }
            (Some(_), Some(_)) => {}
            (None, Some(r)) if ours.contains(&r.target) => out.push(RouteChange::Delete {
                table: t.id.clone(),
            }),
            (None, _) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(id: &str, az: &str, free: u32, exposure: Exposure) -> Subnet {
        Subnet {
            id: id.into(),
            az: az.into(),
            cidr: "10.0.0.0/24".into(),
            free_ips: free,
            exposure,
        }
    }

    fn table(id: &str, main: bool, subnets: &[&str], default_target: Option<&str>) -> RouteTable {
        let mut routes = vec![Route {
            destination: "10.0.0.0/16".into(),
            target: "local".into(),
        }];
        if let Some(t) = default_target {
            routes.push(Route {
                destination: "0.0.0.0/0".into(),
                target: t.into(),
            });
        }
        RouteTable {
            id: id.into(),
            main,
            subnet_ids: subnets.iter().map(|s| s.to_string()).collect(),
            routes,
        }
    }

    #[test]
    fn exposure_follows_the_associated_table_or_the_main_one() {
        let tables = vec![
            table("rtb-main", true, &[], Some("nat-1")),
            table("rtb-pub", false, &["subnet-a"], Some("igw-1")),
            table("rtb-iso", false, &["subnet-c"], None),
        ];
        assert_eq!(exposure_of("subnet-a", &tables), Exposure::Public);
        assert_eq!(exposure_of("subnet-b", &tables), Exposure::Nat);
        assert_eq!(exposure_of("subnet-c", &tables), Exposure::Isolated);
    }

    #[test]
    fn public_subnets_in_distinct_azs_are_preferred() {
        let subnets = vec![
            subnet("subnet-1", "us-east-1a", 200, Exposure::Nat),
            subnet("subnet-2", "us-east-1a", 100, Exposure::Public),
            subnet("subnet-3", "us-east-1b", 250, Exposure::Nat),
            subnet("subnet-4", "us-east-1c", 50, Exposure::Public),
            subnet("subnet-5", "us-east-1c", 60, Exposure::Public),
        ];
        let c = choose_subnets("vpc-1", &subnets, 2).expect("two AZs");
        let ids: Vec<&str> = c.subnets.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["subnet-2", "subnet-5"]);
        assert_eq!(c.warning, None);
    }

    #[test]
    fn only_nat_subnets_warn_about_relays() {
        let subnets = vec![
            subnet("subnet-1", "us-east-1a", 200, Exposure::Nat),
            subnet("subnet-3", "us-east-1b", 250, Exposure::Nat),
        ];
        let c = choose_subnets("vpc-1", &subnets, 2).expect("two AZs");
        let w = c.warning.expect("a warning");
        assert!(w.contains("NAT gateway") && w.contains("relays"), "{w}");
        assert!(w.contains("subnet-1") && w.contains("subnet-3"), "{w}");
    }

    #[test]
    fn ha_in_a_single_az_is_refused_naming_the_flag() {
        let subnets = vec![
            subnet("subnet-1", "us-east-1a", 200, Exposure::Public),
            subnet("subnet-2", "us-east-1a", 200, Exposure::Public),
        ];
        let err = choose_subnets("vpc-1", &subnets, 2).expect_err("one AZ");
        assert_eq!(
            err.to_string(),
            "--ha needs subnets in two availability zones, but --vpc vpc-1 has subnets only in us-east-1a"
        );
        assert_eq!(
            choose_subnets("vpc-1", &subnets, 1)
                .expect("one")
                .subnets
                .len(),
            1
        );
    }

    #[test]
    fn the_vpc_resolver_is_base_plus_two() {
        assert_eq!(
            vpc_resolver("10.0.0.0/16").expect("ok"),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert_eq!(
            vpc_resolver("172.31.16.0/20").expect("ok"),
            Ipv4Addr::new(172, 31, 16, 2)
        );
        assert!(vpc_resolver("fd00::/56").is_err());
    }

    #[test]
    fn tailnet_routes_are_added_replaced_and_removed_only_when_ours() {
        let mut with_route = table("rtb-2", false, &[], None);
        with_route.routes.push(Route {
            destination: TAILNET_CIDR.into(),
            target: "eni-old".into(),
        });
        let tables = vec![table("rtb-1", true, &[], None), with_route];
        assert_eq!(
            tailnet_route_changes(&tables, Some("eni-new"), &[]),
            vec![
                RouteChange::Create {
                    table: "rtb-1".into(),
                    eni: "eni-new".into()
                },
                RouteChange::Replace {
                    table: "rtb-2".into(),
                    eni: "eni-new".into()
                },
            ]
        );
        // The HA primary pointed it at itself: deploy leaves it there.
        assert_eq!(
            tailnet_route_changes(
                &tables[1..],
                Some("eni-new"),
                &["eni-new".into(), "eni-old".into()]
            ),
            vec![]
        );
        assert_eq!(tailnet_route_changes(&tables, None, &[]), vec![]);
        assert_eq!(
            tailnet_route_changes(&tables, None, &["eni-old".into()]),
            vec![RouteChange::Delete {
                table: "rtb-2".into()
            }]
        );
    }
}
