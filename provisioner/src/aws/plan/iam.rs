//! The instance role, its inline policies and its instance profile.

use super::{Action, Planned};
use crate::aws::observe::IamSeen;
use crate::aws::report::Change;
use crate::aws::spec::{self, check_owner};

/// The inline policies the instance role should have, by name: reading
/// its own secret (`None` until the ARN is known), writing recordings
/// (with the web UI's reads and the `--kms-key` key's use).
pub fn wanted_policies(
    needs_auth_key: bool,
    secret_arn: Option<&str>,
    bucket: Option<&str>,
    recorder_ui: bool,
    kms_key: Option<&str>,
) -> Vec<(&'static str, Option<String>)> {
    let mut wanted = Vec::new();
    if needs_auth_key {
        wanted.push((
            spec::SECRET_POLICY_NAME,
            secret_arn.map(spec::secret_policy),
        ));
    }
    if let Some(bucket) = bucket {
        wanted.push((
            spec::RECORDINGS_POLICY_NAME,
            Some(spec::recordings_policy(bucket, recorder_ui, kms_key)),
        ));
    }
    wanted
}

/// The instance role `name`, exactly the `wanted` inline policies, and the
/// instance profile holding the role.
pub fn iam(
    seen: &IamSeen,
    name: &str,
    deployment: &str,
    wanted: &[(&'static str, Option<String>)],
) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    if let Some(r) = &seen.role {
        check_owner(&r.tags, deployment, "IAM role", name)?;
        p.item("IAM role", name, Change::Unchanged, None);
    } else {
        p.act(Action::CreateRole);
        p.item("IAM role", name, Change::Create, None);
    }
    for (pname, doc) in wanted {
        let change = match (seen.policies.get(*pname), doc) {
            (None, _) => Change::Create,
            (Some(a), Some(d)) if spec::same_policy(a, d) => Change::Unchanged,
            (Some(_), _) => Change::Update,
        };
        if change != Change::Unchanged {
            p.act(Action::PutRolePolicy {
                name: pname,
                doc: doc.clone(),
            });
        }
        let detail = (*pname == spec::RETURN_ROUTE_POLICY_NAME)
            .then(|| doc.as_deref().map(spec::return_route_summary))
            .flatten();
        p.item(
            "IAM inline policy",
            format!("{name}/{pname}"),
            change,
            detail,
        );
    }
    for extra in seen
        .policies
        .keys()
        .filter(|k| !wanted.iter().any(|(w, _)| w == k))
    {
        p.act(Action::DeleteRolePolicy {
            name: extra.clone(),
        });
        p.item(
            "IAM inline policy",
            format!("{name}/{extra}"),
            Change::Delete,
            Some("not part of the least-privilege policy".into()),
        );
    }
    match &seen.profile {
        Some(roles) if roles.iter().any(|r| r == name) => {
            p.item("instance profile", name, Change::Unchanged, None);
        }
        Some(_) => {
            p.act(Action::AddRoleToProfile);
            p.item(
                "instance profile",
                name,
                Change::Update,
                Some("role added".into()),
            );
        }
        None => {
            p.act(Action::CreateInstanceProfile);
            p.item("instance profile", name, Change::Create, None);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::api::IamRole;
    use crate::aws::plan::samples::{DEP, actions, ours};
    use std::collections::BTreeMap;

    #[test]
    fn iam_from_nothing_creates_role_policies_and_profile() {
        let seen = IamSeen {
            role: None,
            policies: BTreeMap::new(),
            profile: None,
        };
        let wanted = wanted_policies(true, None, Some("b"), false, None);
        let p = iam(&seen, "causeway-prod-recorder", DEP, &wanted).expect("ok");
        assert_eq!(
            actions(&p),
            [
                &Action::CreateRole,
                &Action::PutRolePolicy {
                    name: spec::SECRET_POLICY_NAME,
                    doc: None
                },
                &Action::PutRolePolicy {
                    name: spec::RECORDINGS_POLICY_NAME,
                    doc: Some(spec::recordings_policy("b", false, None))
                },
                &Action::CreateInstanceProfile,
            ]
        );
    }

    #[test]
    fn the_return_route_policy_is_planned_with_its_scope_shown() {
        let seen = IamSeen {
            role: None,
            policies: BTreeMap::new(),
            profile: None,
        };
        let doc = spec::return_route_policy("us-east-1", "123456789012", &["rtb-12345678".into()]);
        let mut wanted = wanted_policies(true, Some("arn:s"), None, false, None);
        wanted.push((spec::RETURN_ROUTE_POLICY_NAME, Some(doc.clone())));
        let p = iam(&seen, "r", DEP, &wanted).expect("ok");
        assert!(actions(&p).contains(&&Action::PutRolePolicy {
            name: spec::RETURN_ROUTE_POLICY_NAME,
            doc: Some(doc)
        }));
        let item = p
            .items
            .iter()
            .find(|i| i.name == "r/causeway-return-route")
            .expect("an item for the policy");
        assert_eq!(
            item.detail.as_deref(),
            Some("ec2:CreateRoute, ec2:ReplaceRoute on rtb-12345678; ec2:DescribeRouteTables on *")
        );
    }

    #[test]
    fn iam_as_wanted_changes_nothing_and_a_stray_policy_goes() {
        let arn = "arn:aws:secretsmanager:us-east-1:1:secret:x";
        let wanted = wanted_policies(true, Some(arn), None, false, None);
        let mut seen = IamSeen {
            role: Some(IamRole {
                name: "r".into(),
                arn: "arn:role".into(),
                tags: ours(),
            }),
            // IAM hands documents back reformatted: still the same.
            policies: BTreeMap::from([(
                spec::SECRET_POLICY_NAME.to_owned(),
                serde_json::to_string_pretty(
                    &serde_json::from_str::<serde_json::Value>(&spec::secret_policy(arn))
                        .expect("json"),
                )
                .expect("json"),
            )]),
            profile: Some(vec!["r".into()]),
        };
        let kept = iam(&seen, "r", DEP, &wanted).expect("ok");
        assert!(kept.actions.is_empty(), "{:?}", kept.actions);

        seen.policies.insert("admin".into(), "{}".into());
        let p = iam(&seen, "r", DEP, &wanted).expect("ok");
        assert_eq!(
            actions(&p),
            [&Action::DeleteRolePolicy {
                name: "admin".into()
            }]
        );
        assert!(
            p.items
                .iter()
                .any(|i| i.name == "r/admin" && i.change == Change::Delete)
        );
    }
}
