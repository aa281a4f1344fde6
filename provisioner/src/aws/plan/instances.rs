//! The launch template and the instances launched from it.

use super::{Action, Planned};
use crate::aws::api::{Instance, LaunchTemplate};
use crate::aws::network::Subnet;
use crate::aws::report::Change;
use crate::aws::spec::{self, TemplateData, check_owner};

/// Launch template `name` holding `wanted`; also the default version the
/// instances should come from after the run (a plan predicts the version
/// an update creates).
pub fn launch_template(
    seen: Option<&LaunchTemplate>,
    name: &str,
    deployment: &str,
    wanted: &TemplateData,
) -> anyhow::Result<(Planned, i64)> {
    let mut p = Planned::default();
    let Some(lt) = seen else {
        p.act(Action::CreateTemplate {
            data: wanted.clone(),
        });
        p.item(
            "launch template",
            name,
            Change::Create,
            Some(wanted.summary()),
        );
        return Ok((p, 1));
    };
    check_owner(&lt.tags, deployment, "launch template", name)?;
    let differs = lt
        .data
        .as_ref()
        .map(|d| spec::template_diff(d, wanted))
        .unwrap_or_else(|| vec!["unreadable default version"]);
    if differs.is_empty() {
        p.item(
            "launch template",
            name,
            Change::Unchanged,
            Some(wanted.summary()),
        );
        return Ok((p, lt.default_version));
    }
    let version = lt.default_version + 1;
    p.act(Action::UpdateTemplate {
        id: lt.id.clone(),
        data: wanted.clone(),
    });
    p.item(
        "launch template",
        name,
        Change::Update,
        Some(format!(
            "new default version {version} ({} changed); instances are replaced one at a time",
            differs.join(", ")
        )),
    );
    Ok((p, version))
}

/// The instances `wanted` (name and subnet each), launched from template
/// version `version`: the ones from another version are replaced, missing
/// ones launched, others terminated.
pub fn instances(
    existing: &[Instance],
    wanted: &[(String, Subnet)],
    version: i64,
    instance_type: &str,
) -> Planned {
    let mut p = Planned::default();
    for (name, subnet) in wanted {
        let Some(inst) = existing.iter().find(|x| &x.name == name) else {
            p.act(Action::Launch {
                name: name.clone(),
                subnet: subnet.clone(),
            });
            p.item(
                "instance",
                name,
                Change::Create,
                Some(format!("{instance_type} in {} ({})", subnet.az, subnet.id)),
            );
            continue;
        };
        if inst.template_version == Some(version) {
            let detail = format!(
                "{} {} in {} ({})",
                inst.id, inst.instance_type, inst.az, inst.state
            );
            p.item("instance", name, Change::Unchanged, Some(detail));
            continue;
        }
        let detail = format!(
            "replace {} (launched from template version {}, the default is now {version})",
            inst.id,
            inst.template_version
                .map_or_else(|| "unknown".to_owned(), |v| v.to_string()),
        );
        p.act(Action::Replace {
            name: name.clone(),
            old: inst.id.clone(),
            subnet: subnet.clone(),
        });
        p.item("instance", name, Change::Update, Some(detail));
    }
    let extras: Vec<&Instance> = existing
        .iter()
        .filter(|x| !wanted.iter().any(|(w, _)| *w == x.name))
        .collect();
    for x in &extras {
        p.item(
            "instance",
            &x.name,
            Change::Delete,
            Some(format!(
                "{} is not part of this deployment's shape any more",
                x.id
            )),
        );
    }
    if !extras.is_empty() {
        p.act(Action::Terminate {
            ids: extras.iter().map(|x| x.id.clone()).collect(),
        });
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::plan::samples::{DEP, actions, changes, instance, ours, subnet};

    #[test]
    fn a_changed_template_gets_a_new_default_version() {
        let wanted = TemplateData::wanted("ami-2", "/dev/xvda", "c8g.xlarge", "p", "x".into(), 8);
        let mut old = wanted.clone();
        old.image_id = "ami-1".into();
        let lt = LaunchTemplate {
            id: "lt-1".into(),
            name: "t".into(),
            default_version: 3,
            data: Some(old),
            tags: ours(),
        };
        let (p, version) = launch_template(Some(&lt), "t", DEP, &wanted).expect("ok");
        assert_eq!(version, 4);
        assert!(
            matches!(p.actions.as_slice(), [Action::UpdateTemplate { id, .. }] if id == "lt-1")
        );
        assert!(
            p.items[0]
                .detail
                .as_deref()
                .is_some_and(|d| d.starts_with("new default version 4 (image changed)"))
        );
        let same = LaunchTemplate {
            data: Some(wanted.clone()),
            ..lt
        };
        let (p, version) = launch_template(Some(&same), "t", DEP, &wanted).expect("ok");
        assert_eq!((p.actions.len(), version), (0, 3));
        let (p, version) = launch_template(None, "t", DEP, &wanted).expect("ok");
        assert_eq!((p.items[0].change, version), (Change::Create, 1));
    }

    #[test]
    fn instances_are_replaced_launched_and_terminated_in_that_order() {
        let existing = [
            instance("causeway-prod-subnet-router-0", "i-old", Some(1)),
            instance("causeway-prod-subnet-router", "i-single", Some(2)),
        ];
        let wanted = [
            (
                "causeway-prod-subnet-router-0".to_owned(),
                subnet("subnet-a", "us-east-1a"),
            ),
            (
                "causeway-prod-subnet-router-1".to_owned(),
                subnet("subnet-b", "us-east-1b"),
            ),
        ];
        let p = instances(&existing, &wanted, 2, "c8g.xlarge");
        assert_eq!(
            actions(&p),
            [
                &Action::Replace {
                    name: "causeway-prod-subnet-router-0".into(),
                    old: "i-old".into(),
                    subnet: subnet("subnet-a", "us-east-1a")
                },
                &Action::Launch {
                    name: "causeway-prod-subnet-router-1".into(),
                    subnet: subnet("subnet-b", "us-east-1b")
                },
                &Action::Terminate {
                    ids: vec!["i-single".into()]
                },
            ]
        );
        assert_eq!(
            changes(&p),
            [
                ("instance", Change::Update),
                ("instance", Change::Create),
                ("instance", Change::Delete)
            ]
        );
        let current = [instance("causeway-prod-subnet-router-0", "i-new", Some(2))];
        let p = instances(&current, &wanted[..1], 2, "c8g.xlarge");
        assert!(p.actions.is_empty());
    }
}
