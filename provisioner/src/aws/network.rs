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
    /// `--egress-subnet` is not in the VPC.
    #[error("--egress-subnet {subnet} is not a subnet of --vpc {vpc}")]
    EgressNotInVpc {
        /// The subnet.
        subnet: String,
        /// The VPC.
        vpc: String,
    },
    /// `--egress-subnet`'s default route is not a NAT gateway.
    #[error(
        "--egress-subnet {subnet}: its route table {table} sends 0.0.0.0/0 to {found}; expected a NAT gateway (nat-...), whose address third parties would see"
    )]
    EgressNotNat {
        /// The subnet.
        subnet: String,
        /// Its route table (associated, or the VPC's main one).
        table: String,
        /// What the default route points at, or that there is none.
        found: String,
    },
    /// No public subnet in the egress subnet's AZ for the primary interface.
    #[error(
        "--egress-subnet {subnet} is in {az}, but --vpc {vpc} has no public subnet (0.0.0.0/0 -> internet gateway) in {az} for the exit node's own interface; both interfaces of an instance are in one availability zone"
    )]
    NoPublicSubnetInAz {
        /// The egress subnet.
        subnet: String,
        /// Its AZ.
        az: String,
        /// The VPC.
        vpc: String,
    },
}

/// The private subnet an exit node sends forwarded internet traffic out
/// of (`--egress-subnet`), and the NAT gateway its route table's default
/// route points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EgressSubnet {
    /// The subnet.
    pub subnet: Subnet,
    /// Its route table (`rtb-…`).
    pub route_table: String,
    /// The NAT gateway (`nat-…`).
    pub nat_gateway: String,
}

/// The route table a subnet uses: the one associated with it, else the
/// VPC's main table.
pub fn table_of<'a>(subnet_id: &str, tables: &'a [RouteTable]) -> Option<&'a RouteTable> {
    tables
        .iter()
        .find(|t| t.subnet_ids.iter().any(|s| s == subnet_id))
        .or_else(|| tables.iter().find(|t| t.main))
}

/// Checks `--egress-subnet`: a subnet of the VPC whose default route is a
/// NAT gateway. Refused otherwise, naming the subnet, its route table and
/// what its default route points at.
pub fn egress_subnet(
    vpc: &str,
    subnet_id: &str,
    subnets: &[Subnet],
    tables: &[RouteTable],
) -> Result<EgressSubnet, NetworkError> {
    let Some(subnet) = subnets.iter().find(|s| s.id == subnet_id) else {
        return Err(NetworkError::EgressNotInVpc {
            subnet: subnet_id.to_owned(),
            vpc: vpc.to_owned(),
        });
    };
    let table = table_of(subnet_id, tables);
    let default = table.and_then(|t| t.routes.iter().find(|r| r.destination == "0.0.0.0/0"));
    match (table, default) {
        (Some(t), Some(r)) if r.target.starts_with("nat-") => Ok(EgressSubnet {
            subnet: subnet.clone(),
            route_table: t.id.clone(),
            nat_gateway: r.target.clone(),
        }),
        (t, r) => Err(NetworkError::EgressNotNat {
            subnet: subnet_id.to_owned(),
            table: t.map_or_else(|| "(none)".to_owned(), |t| t.id.clone()),
            found: r.map_or_else(
                || "nothing (no default route)".to_owned(),
                |r| r.target.clone(),
            ),
        }),
    }
}

/// The subnet for an exit node's own (public) interface when it also has
/// an egress interface: a public subnet in the egress subnet's AZ, chosen
/// as [`choose_subnets`] would.
pub fn subnet_beside(
    vpc: &str,
    egress: &EgressSubnet,
    subnets: &[Subnet],
) -> Result<SubnetChoice, NetworkError> {
    let candidates: Vec<Subnet> = subnets
        .iter()
        .filter(|s| {
            s.az == egress.subnet.az && s.id != egress.subnet.id && s.exposure == Exposure::Public
        })
        .cloned()
        .collect();
    if candidates.is_empty() {
        return Err(NetworkError::NoPublicSubnetInAz {
            subnet: egress.subnet.id.clone(),
            az: egress.subnet.az.clone(),
            vpc: vpc.to_owned(),
        });
    }
    choose_subnets(vpc, &candidates, 1)
}

/// How each subnet reaches the internet, from the table associated with it
/// (or the main table).
pub fn exposure_of(subnet_id: &str, tables: &[RouteTable]) -> Exposure {
    let Some(table) = table_of(subnet_id, tables) else {
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
    fn an_egress_subnet_routes_through_a_nat_gateway_or_is_refused_naming_its_table() {
        let tables = vec![
            table("rtb-main", true, &[], None),
            table("rtb-pub", false, &["subnet-a", "subnet-x"], Some("igw-1")),
            table("rtb-nat", false, &["subnet-p"], Some("nat-0abc")),
        ];
        let subnets = vec![
            subnet("subnet-a", "us-east-1a", 200, Exposure::Public),
            subnet("subnet-b", "us-east-1b", 200, Exposure::Public),
            subnet("subnet-p", "us-east-1a", 100, Exposure::Nat),
            subnet("subnet-i", "us-east-1a", 100, Exposure::Isolated),
            subnet("subnet-x", "us-east-1c", 100, Exposure::Public),
        ];
        let e = egress_subnet("vpc-1", "subnet-p", &subnets, &tables).expect("behind NAT");
        assert_eq!(
            (
                e.subnet.id.as_str(),
                e.route_table.as_str(),
                e.nat_gateway.as_str()
            ),
            ("subnet-p", "rtb-nat", "nat-0abc")
        );
        let beside = subnet_beside("vpc-1", &e, &subnets).expect("a public subnet in 1a");
        assert_eq!(beside.subnets[0].id, "subnet-a");
        assert_eq!(beside.warning, None);

        assert_eq!(
            egress_subnet("vpc-1", "subnet-a", &subnets, &tables)
                .expect_err("public")
                .to_string(),
            "--egress-subnet subnet-a: its route table rtb-pub sends 0.0.0.0/0 to igw-1; expected a NAT gateway (nat-...), whose address third parties would see"
        );
        assert_eq!(
            egress_subnet("vpc-1", "subnet-i", &subnets, &tables)
                .expect_err("isolated")
                .to_string(),
            "--egress-subnet subnet-i: its route table rtb-main sends 0.0.0.0/0 to nothing (no default route); expected a NAT gateway (nat-...), whose address third parties would see"
        );
        assert_eq!(
            egress_subnet("vpc-1", "subnet-9", &subnets, &tables)
                .expect_err("elsewhere")
                .to_string(),
            "--egress-subnet subnet-9 is not a subnet of --vpc vpc-1"
        );

        let lonely = EgressSubnet {
            subnet: subnet("subnet-q", "us-east-1d", 100, Exposure::Nat),
            route_table: "rtb-nat".into(),
            nat_gateway: "nat-0abc".into(),
        };
        assert_eq!(
            subnet_beside("vpc-1", &lonely, &subnets)
                .expect_err("no public subnet in 1d")
                .to_string(),
            "--egress-subnet subnet-q is in us-east-1d, but --vpc vpc-1 has no public subnet (0.0.0.0/0 -> internet gateway) in us-east-1d for the exit node's own interface; both interfaces of an instance are in one availability zone"
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
