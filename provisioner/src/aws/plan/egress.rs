//! An exit node's egress (`--egress-subnet`): a second network interface
//! in a private subnet whose default route is a NAT gateway, and an
//! Elastic IP for the instance's own interface (AWS assigns no public
//! address at launch to an instance with two interfaces). Without
//! `--egress-subnet` both are removed once no instance holds them.

use super::control_state::one_named;
use super::{Action, Planned};
use crate::aws::api::{Address, Instance, NetworkInterface};
use crate::aws::network::EgressSubnet;
use crate::aws::report::Change;
use crate::aws::spec;

/// What the egress should be.
#[derive(Debug, Clone, Copy)]
pub struct EgressWanted<'a> {
    /// The interface's `Name` (`causeway-NAME-ROLE-egress`).
    pub interface_name: &'a str,
    /// The Elastic IP's `Name` (`causeway-NAME-ROLE`).
    pub address_name: &'a str,
    /// `--egress-subnet`, checked; `None`: no egress interface.
    pub subnet: Option<&'a EgressSubnet>,
    /// The NAT gateway's public address, when known (for the report).
    pub nat_public_ip: Option<&'a str>,
}

/// The egress interface and the Elastic IP, made before the launch
/// template (whose user data names the interface's MAC address), from the
/// deployment's egress `interfaces` and `addresses`.
pub fn egress_resources(
    interfaces: &[NetworkInterface],
    addresses: &[Address],
    w: &EgressWanted<'_>,
) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    let Some(egress) = w.subnet else {
        return Ok(p);
    };
    let seen = one_interface(interfaces, w.interface_name)?;
    let third_parties = w
        .nat_public_ip
        .map(|ip| format!("; third parties see {ip}"))
        .unwrap_or_default();
    match seen {
        None => {
            p.act(Action::CreateEgressInterface {
                subnet: egress.subnet.id.clone(),
            });
            p.item(
                "egress interface",
                w.interface_name,
                Change::Create,
                Some(format!(
                    "in {} ({}), device index 1, source/destination check off, 0.0.0.0/0 via {} in {}{third_parties}",
                    egress.subnet.id, egress.subnet.az, egress.nat_gateway, egress.route_table
                )),
            );
        }
        Some(eni) if eni.subnet != egress.subnet.id => anyhow::bail!(
            "egress interface {} ({}) is in {}, not in --egress-subnet {}: an interface cannot move between subnets; run destroy, then deploy with the new subnet",
            w.interface_name,
            eni.id,
            eni.subnet,
            egress.subnet.id
        ),
        Some(eni) if eni.source_dest_check => {
            p.act(Action::SetInterfaceSourceDestCheck {
                id: eni.id.clone(),
                on: false,
            });
            p.item(
                "egress interface",
                w.interface_name,
                Change::Update,
                Some(format!("{}: source/destination check off", eni.id)),
            );
        }
        Some(eni) => p.item(
            "egress interface",
            w.interface_name,
            Change::Unchanged,
            Some(format!(
                "{} {} in {}, MAC {}, 0.0.0.0/0 via {}{third_parties}",
                eni.id, eni.private_ip, eni.subnet, eni.mac, egress.nat_gateway
            )),
        ),
    }
    match one_address(addresses, w.address_name)? {
        None => {
            p.act(Action::AllocateAddress);
            p.item(
                "Elastic IP",
                w.address_name,
                Change::Create,
                Some("for the instance's own interface: peers connect to it directly".into()),
            );
        }
        Some(a) => p.item(
            "Elastic IP",
            w.address_name,
            Change::Unchanged,
            Some(a.public_ip.clone()),
        ),
    }
    Ok(p)
}

/// After the instances run: the Elastic IP on the instance's primary
/// interface; without `--egress-subnet`, an egress interface no instance
/// holds is deleted and the Elastic IP released.
pub fn egress_attachments(
    interfaces: &[NetworkInterface],
    addresses: &[Address],
    instance: Option<&Instance>,
    w: &EgressWanted<'_>,
) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    let address = one_address(addresses, w.address_name)?;
    if w.subnet.is_none() {
        for eni in interfaces
            .iter()
            .filter(|i| named(&i.tags, w.interface_name))
        {
            p.act(Action::DeleteEgressInterface { id: eni.id.clone() });
            p.item(
                "egress interface",
                w.interface_name,
                Change::Delete,
                Some(format!("{}: no --egress-subnet any more", eni.id)),
            );
        }
        if let Some(a) = address {
            p.act(Action::ReleaseAddress { address: a.clone() });
            p.item(
                "Elastic IP",
                w.address_name,
                Change::Delete,
                Some(format!(
                    "{}: the instance has a public address of its own again",
                    a.public_ip
                )),
            );
        }
        return Ok(p);
    }
    let Some(instance) = instance else {
        return Ok(p);
    };
    // An address associated with an interface names the instance too on
    // AWS, not on every emulator: either says it is in place.
    let in_place = address.is_some_and(|a| {
        a.interface_id.as_deref() == Some(instance.eni.as_str())
            || a.instance_id.as_deref() == Some(instance.id.as_str())
    });
    if !in_place {
        p.associate_address(
            w.address_name,
            address,
            &instance.id,
            Some(&instance.eni),
            &format!("{} ({})", instance.id, instance.eni),
        );
    }
    Ok(p)
}

fn named(tags: &std::collections::BTreeMap<String, String>, name: &str) -> bool {
    tags.get("Name").is_some_and(|n| n == name)
}

fn one_interface<'a>(
    interfaces: &'a [NetworkInterface],
    name: &str,
) -> anyhow::Result<Option<&'a NetworkInterface>> {
    one_named(
        interfaces,
        |i| &i.tags,
        |i| &i.id,
        name,
        "egress interfaces",
        "the instance attaches exactly one: delete the others",
    )
}

fn one_address<'a>(addresses: &'a [Address], name: &str) -> anyhow::Result<Option<&'a Address>> {
    one_named(
        addresses,
        |a| &a.tags,
        |a| &a.allocation_id,
        name,
        "Elastic IPs",
        "the exit node uses exactly one: release the others",
    )
}

/// The tags of the egress interface: the contract's, and
/// [`spec::TAG_INTERFACE`] so that it is told apart from the instances'
/// own interfaces.
pub fn egress_interface_tags(mut tags: Vec<(String, String)>) -> Vec<(String, String)> {
    tags.push((
        spec::TAG_INTERFACE.to_owned(),
        spec::EGRESS_INTERFACE.to_owned(),
    ));
    tags
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::aws::network::{Exposure, Subnet};
    use crate::aws::plan::samples::{actions, changes, instance};

    fn egress() -> EgressSubnet {
        EgressSubnet {
            subnet: Subnet {
                id: "subnet-p".into(),
                az: "us-east-1a".into(),
                cidr: "10.0.3.0/24".into(),
                free_ips: 250,
                exposure: Exposure::Nat,
            },
            route_table: "rtb-nat".into(),
            nat_gateway: "nat-1".into(),
        }
    }

    fn wanted(e: Option<&EgressSubnet>) -> EgressWanted<'_> {
        EgressWanted {
            interface_name: "x-egress",
            address_name: "x",
            subnet: e,
            nat_public_ip: Some("203.0.113.7"),
        }
    }

    fn eni(subnet: &str, check: bool, attached: Option<&str>) -> NetworkInterface {
        NetworkInterface {
            id: "eni-e".into(),
            subnet: subnet.into(),
            az: "us-east-1a".into(),
            mac: "0a:1b:2c:3d:4e:5f".into(),
            private_ip: "10.0.3.9".into(),
            status: if attached.is_some() {
                "in-use"
            } else {
                "available"
            }
            .into(),
            attachment: attached.map(|i| (i.to_owned(), 1)),
            source_dest_check: check,
            tags: BTreeMap::from([("Name".to_owned(), "x-egress".to_owned())]),
        }
    }

    fn address(instance: Option<&str>) -> Address {
        Address {
            allocation_id: "eipalloc-1".into(),
            public_ip: "198.51.100.4".into(),
            association_id: instance.map(|_| "eipassoc-1".into()),
            instance_id: instance.map(str::to_owned),
            interface_id: None,
            tags: BTreeMap::from([("Name".to_owned(), "x".to_owned())]),
        }
    }

    #[test]
    fn a_new_egress_gets_an_interface_and_an_elastic_ip() {
        let e = egress();
        let p = egress_resources(&[], &[], &wanted(Some(&e))).expect("ok");
        assert_eq!(
            actions(&p),
            [
                &Action::CreateEgressInterface {
                    subnet: "subnet-p".into()
                },
                &Action::AllocateAddress
            ]
        );
        assert_eq!(
            p.items[0].detail.as_deref(),
            Some(
                "in subnet-p (us-east-1a), device index 1, source/destination check off, 0.0.0.0/0 via nat-1 in rtb-nat; third parties see 203.0.113.7"
            )
        );
        let p = egress_resources(&[], &[], &wanted(None)).expect("ok");
        assert!(p.items.is_empty() && p.actions.is_empty());
    }

    #[test]
    fn an_egress_as_wanted_changes_nothing_and_a_moved_subnet_is_refused() {
        let e = egress();
        let seen = [eni("subnet-p", false, Some("i-1"))];
        let p = egress_resources(&seen, &[address(Some("i-1"))], &wanted(Some(&e))).expect("ok");
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        let p = egress_resources(
            &[eni("subnet-p", true, None)],
            &[address(None)],
            &wanted(Some(&e)),
        )
        .expect("ok");
        assert_eq!(
            actions(&p),
            [&Action::SetInterfaceSourceDestCheck {
                id: "eni-e".into(),
                on: false
            }]
        );
        let err = egress_resources(&[eni("subnet-q", false, None)], &[], &wanted(Some(&e)))
            .expect_err("moved");
        assert!(
            err.to_string()
                .contains("is in subnet-q, not in --egress-subnet subnet-p"),
            "{err}"
        );
        let mut two = eni("subnet-p", false, None);
        two.id = "eni-f".into();
        let err = egress_resources(&[eni("subnet-p", false, None), two], &[], &wanted(Some(&e)))
            .expect_err("two");
        assert!(
            err.to_string()
                .starts_with("several egress interfaces are named x-egress (eni-e, eni-f)"),
            "{err}"
        );
    }

    #[test]
    fn the_elastic_ip_follows_the_instance_and_goes_with_the_egress() {
        let e = egress();
        let mut exit = instance("x", "i-2", Some(1));
        exit.eni = "eni-primary".into();
        let p = egress_attachments(
            &[eni("subnet-p", false, Some("i-2"))],
            &[address(Some("i-1"))],
            Some(&exit),
            &wanted(Some(&e)),
        )
        .expect("ok");
        assert_eq!(
            actions(&p),
            [&Action::AssociateAddress {
                instance: "i-2".into(),
                interface: Some("eni-primary".into())
            }]
        );
        assert_eq!(
            p.items[0].detail.as_deref(),
            Some("198.51.100.4 -> i-2 (eni-primary)")
        );
        let p = egress_attachments(&[], &[address(Some("i-2"))], Some(&exit), &wanted(Some(&e)))
            .expect("ok");
        assert!(p.actions.is_empty());
        let mut on_interface = address(None);
        on_interface.interface_id = Some("eni-primary".into());
        let p =
            egress_attachments(&[], &[on_interface], Some(&exit), &wanted(Some(&e))).expect("ok");
        assert!(p.actions.is_empty());

        let p = egress_attachments(
            &[eni("subnet-p", false, None)],
            &[address(None)],
            Some(&exit),
            &wanted(None),
        )
        .expect("ok");
        assert_eq!(
            actions(&p),
            [
                &Action::DeleteEgressInterface { id: "eni-e".into() },
                &Action::ReleaseAddress {
                    address: address(None)
                }
            ]
        );
        assert_eq!(
            changes(&p),
            [
                ("egress interface", Change::Delete),
                ("Elastic IP", Change::Delete)
            ]
        );
    }
}
