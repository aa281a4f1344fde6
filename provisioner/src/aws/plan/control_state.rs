//! Control's stable identity: an Elastic IP that follows the control
//! instance (so `--control-url` keeps pointing at it), and a separate
//! encrypted state volume that outlives the instance and is attached to
//! whichever instance is control now.

use std::collections::BTreeMap;

use super::{Action, Planned};
use crate::aws::api::{Address, Instance, Volume};
use crate::aws::report::Change;
use crate::aws::spec;

/// What control's address and volume should be.
#[derive(Debug, Clone, Copy)]
pub struct ControlStateWanted<'a> {
    /// The Elastic IP's `Name` (`causeway-NAME-control`).
    pub address_name: &'a str,
    /// The volume's `Name` (`causeway-NAME-control-state`).
    pub volume_name: &'a str,
    /// The AZ of control's subnet, where the volume must be.
    pub az: &'a str,
    /// The volume's size in GiB when created.
    pub size_gib: i32,
}

/// Control's Elastic IP and state volume themselves, from what `addresses`
/// and `volumes` of the deployment exist: allocated and created when
/// missing. This comes before the launch template, whose user data names
/// the volume (`state_volume`) for the image to mount.
pub fn control_resources(
    addresses: &[Address],
    volumes: &[Volume],
    w: &ControlStateWanted<'_>,
) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    match find_address(addresses, w)? {
        None => {
            p.act(Action::AllocateAddress);
            p.item("Elastic IP", w.address_name, Change::Create, None);
        }
        Some(a) => p.item(
            "Elastic IP",
            w.address_name,
            Change::Unchanged,
            Some(a.public_ip.clone()),
        ),
    }
    match find_volume(volumes, w)? {
        None => {
            p.act(Action::CreateVolume {
                az: w.az.to_owned(),
                size_gib: w.size_gib,
            });
            p.item(
                "state volume",
                w.volume_name,
                Change::Create,
                Some(format!(
                    "{} GiB gp3, encrypted, in {}, kept across instance replacement",
                    w.size_gib, w.az
                )),
            );
        }
        Some(v) => p.item(
            "state volume",
            w.volume_name,
            Change::Unchanged,
            Some(format!(
                "{} ({} GiB {}, encrypted)",
                v.id, v.size_gib, v.volume_type
            )),
        ),
    }
    Ok(p)
}

/// Control's Elastic IP associated with, and its state volume attached to,
/// `instance` (taken from any instance that held them before). Once the
/// instance runs; a plan shows them for an address and volume it would
/// create.
pub fn control_attachments(
    addresses: &[Address],
    volumes: &[Volume],
    instance: &Instance,
    w: &ControlStateWanted<'_>,
) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    let address = find_address(addresses, w)?;
    if address.is_none_or(|a| a.instance_id.as_deref() != Some(instance.id.as_str())) {
        let was = address
            .and_then(|a| a.instance_id.clone())
            .map(|old| format!(", was {old}"))
            .unwrap_or_default();
        p.associate_address(
            w.address_name,
            address,
            &instance.id,
            None,
            &format!("{}{was}", instance.id),
        );
    }
    let volume = find_volume(volumes, w)?;
    match volume.and_then(|v| v.attachment.as_ref()) {
        Some((holder, _)) if *holder == instance.id => {}
        Some((holder, _)) => {
            let id = volume.map(|v| v.id.clone()).unwrap_or_default();
            p.act(Action::DetachVolume { id: id.clone() });
            p.act(Action::AttachVolume {
                instance: instance.id.clone(),
            });
            p.item(
                "state volume attachment",
                w.volume_name,
                Change::Update,
                Some(format!(
                    "{id} moves from {holder} to {} as {}",
                    instance.id,
                    spec::STATE_VOLUME_DEVICE
                )),
            );
        }
        None => {
            p.act(Action::AttachVolume {
                instance: instance.id.clone(),
            });
            p.item(
                "state volume attachment",
                w.volume_name,
                if volume.is_none() {
                    Change::Create
                } else {
                    Change::Update
                },
                Some(format!(
                    "-> {} as {}",
                    instance.id,
                    spec::STATE_VOLUME_DEVICE
                )),
            );
        }
    }
    Ok(p)
}

fn find_address<'a>(
    addresses: &'a [Address],
    w: &ControlStateWanted<'_>,
) -> anyhow::Result<Option<&'a Address>> {
    one_named(
        addresses,
        |a| &a.tags,
        |a| &a.allocation_id,
        w.address_name,
        "Elastic IPs",
        "release all but the one --control-url names",
    )
}

/// Control's volume, refused when it cannot be control's: in another AZ
/// than its subnet, or unencrypted.
fn find_volume<'a>(
    volumes: &'a [Volume],
    w: &ControlStateWanted<'_>,
) -> anyhow::Result<Option<&'a Volume>> {
    let volume = one_named(
        volumes,
        |v| &v.tags,
        |v| &v.id,
        w.volume_name,
        "volumes",
        "control's state must be on exactly one: keep the one holding it and delete the others",
    )?;
    if let Some(v) = volume {
        if v.az != w.az {
            anyhow::bail!(
                "state volume {} ({}) is in {}, but control's subnet is in {}: a volume cannot move between availability zones; deploy control into a subnet of {} (--vpc with a subnet there), or snapshot the volume and restore it in {}",
                w.volume_name,
                v.id,
                v.az,
                w.az,
                v.az,
                w.az
            );
        }
        if !v.encrypted {
            anyhow::bail!(
                "state volume {} ({}) is not encrypted; the contract keeps control's state on an encrypted volume: copy the state to an encrypted one",
                w.volume_name,
                v.id
            );
        }
    }
    Ok(volume)
}

/// The one resource among `all` whose `Name` tag is `name` (`None`: there
/// is none); several are refused, naming them and saying what to do.
pub(super) fn one_named<'a, T>(
    all: &'a [T],
    tags: impl Fn(&T) -> &BTreeMap<String, String>,
    id: impl Fn(&T) -> &String,
    name: &str,
    kind: &str,
    remedy: &str,
) -> anyhow::Result<Option<&'a T>> {
    let ours: Vec<&T> = all
        .iter()
        .filter(|r| tags(r).get("Name").map(String::as_str) == Some(name))
        .collect();
    match ours[..] {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => {
            let ids: Vec<&str> = ours.iter().map(|r| id(r).as_str()).collect();
            anyhow::bail!(
                "several {kind} are named {name} ({}); {remedy}",
                ids.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::plan::samples::{actions, changes, instance, ours};

    /// Both steps, as deploy takes them: the resources, then (once the
    /// instance runs) the attachments.
    fn control_state(
        addresses: &[Address],
        volumes: &[Volume],
        instance: Option<&Instance>,
        w: &ControlStateWanted<'_>,
    ) -> anyhow::Result<Planned> {
        let mut p = control_resources(addresses, volumes, w)?;
        if let Some(i) = instance {
            let then = control_attachments(addresses, volumes, i, w)?;
            p.items.extend(then.items);
            p.actions.extend(then.actions);
        }
        Ok(p)
    }

    const WANTED: ControlStateWanted<'static> = ControlStateWanted {
        address_name: "causeway-prod-control",
        volume_name: "causeway-prod-control-state",
        az: "us-east-1a",
        size_gib: 8,
    };

    fn tagged(name: &str) -> BTreeMap<String, String> {
        let mut t = ours();
        t.insert("Name".into(), name.into());
        t
    }

    fn address(on: Option<&str>) -> Address {
        Address {
            allocation_id: "eipalloc-1".into(),
            public_ip: "198.18.7.7".into(),
            association_id: on.map(|_| "eipassoc-1".into()),
            instance_id: on.map(str::to_owned),
            interface_id: None,
            tags: tagged("causeway-prod-control"),
        }
    }

    fn volume(on: Option<&str>, az: &str) -> Volume {
        Volume {
            id: "vol-1".into(),
            az: az.into(),
            size_gib: 8,
            volume_type: "gp3".into(),
            encrypted: true,
            state: if on.is_some() { "in-use" } else { "available" }.into(),
            attachment: on.map(|i| (i.to_owned(), "/dev/sdf".to_owned())),
            tags: tagged("causeway-prod-control-state"),
        }
    }

    #[test]
    fn from_nothing_an_address_and_a_volume_are_made_and_attached() {
        let control = instance("causeway-prod-control", "i-1", Some(1));
        let p = control_state(&[], &[], Some(&control), &WANTED).expect("plan");
        assert_eq!(
            actions(&p),
            [
                &Action::AllocateAddress,
                &Action::CreateVolume {
                    az: "us-east-1a".into(),
                    size_gib: 8
                },
                &Action::AssociateAddress {
                    instance: "i-1".into(),
                    interface: None
                },
                &Action::AttachVolume {
                    instance: "i-1".into()
                },
            ]
        );
        // A plan before the instance exists still shows both resources.
        let before = control_state(&[], &[], None, &WANTED).expect("plan");
        assert_eq!(
            changes(&before),
            [
                ("Elastic IP", Change::Create),
                ("state volume", Change::Create)
            ]
        );
    }

    #[test]
    fn as_wanted_nothing_changes() {
        let control = instance("causeway-prod-control", "i-1", Some(1));
        let p = control_state(
            &[address(Some("i-1"))],
            &[volume(Some("i-1"), "us-east-1a")],
            Some(&control),
            &WANTED,
        )
        .expect("plan");
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        assert_eq!(
            changes(&p),
            [
                ("Elastic IP", Change::Unchanged),
                ("state volume", Change::Unchanged)
            ]
        );
    }

    #[test]
    fn a_replacement_instance_gets_the_same_address_and_volume() {
        let new = instance("causeway-prod-control", "i-2", Some(2));
        // The old instance is gone: the address lost its association, the
        // volume was detached when the instance terminated.
        let p = control_state(
            &[address(None)],
            &[volume(None, "us-east-1a")],
            Some(&new),
            &WANTED,
        )
        .expect("plan");
        assert_eq!(
            actions(&p),
            [
                &Action::AssociateAddress {
                    instance: "i-2".into(),
                    interface: None
                },
                &Action::AttachVolume {
                    instance: "i-2".into()
                },
            ]
        );
        // Still held by another instance: moved.
        let p = control_state(
            &[address(Some("i-1"))],
            &[volume(Some("i-1"), "us-east-1a")],
            Some(&new),
            &WANTED,
        )
        .expect("plan");
        assert_eq!(
            actions(&p),
            [
                &Action::AssociateAddress {
                    instance: "i-2".into(),
                    interface: None
                },
                &Action::DetachVolume { id: "vol-1".into() },
                &Action::AttachVolume {
                    instance: "i-2".into()
                },
            ]
        );
        assert!(
            p.items
                .iter()
                .any(|i| i.detail.as_deref() == Some("198.18.7.7 -> i-2, was i-1")),
            "{:?}",
            p.items
        );
    }

    #[test]
    fn a_volume_in_another_az_or_unencrypted_or_twice_is_refused() {
        let control = instance("causeway-prod-control", "i-1", Some(1));
        let err = control_state(&[], &[volume(None, "us-east-1b")], Some(&control), &WANTED)
            .expect_err("other AZ");
        assert!(
            err.to_string()
                .contains("cannot move between availability zones"),
            "{err}"
        );
        let mut plain = volume(None, "us-east-1a");
        plain.encrypted = false;
        let err = control_state(&[], &[plain], Some(&control), &WANTED).expect_err("plain");
        assert!(err.to_string().contains("not encrypted"), "{err}");
        let mut second = volume(None, "us-east-1a");
        second.id = "vol-2".into();
        let err = control_state(
            &[],
            &[volume(None, "us-east-1a"), second],
            Some(&control),
            &WANTED,
        )
        .expect_err("two");
        assert!(err.to_string().contains("vol-1, vol-2"), "{err}");
    }

    #[test]
    fn root_volumes_and_other_addresses_are_not_taken_for_control_s() {
        let control = instance("causeway-prod-control", "i-1", Some(1));
        let mut root = volume(Some("i-1"), "us-east-1a");
        root.tags = tagged("causeway-prod-control");
        let mut other = address(None);
        other.tags = tagged("causeway-prod-recorder");
        let p = control_state(&[other], &[root], Some(&control), &WANTED).expect("plan");
        assert!(p.actions.contains(&Action::AllocateAddress));
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::CreateVolume { .. }))
        );
    }
}
