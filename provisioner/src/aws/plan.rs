//! What `deploy` changes, decided from what [`super::observe`] saw and what
//! the contract wants: for each resource, the report's items and the
//! actions that make it so. Pure, so every decision is unit-tested on
//! made-up observations; `plan` prints the items, `deploy` also applies the
//! actions ([`super::deploy`]).

use std::collections::{BTreeMap, BTreeSet};

use super::api::{Instance, LaunchTemplate, SecretInfo, SecurityGroup};
use super::network::{self, RouteChange, RouteTable, Subnet, TAILNET_CIDR};
use super::observe::{BucketSeen, IamSeen, ResolverSeen, SecretSeen};
use super::report::{Change, Item};
use super::spec::{
    self, IngressRule, Lifecycle, LifecycleRule, SplitDnsEntry, TemplateData, check_owner,
};

/// One change `deploy` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Cancel the secret's scheduled deletion.
    RestoreSecret,
    /// Store the key from `--auth-key-file` in the secret.
    PutSecretValue,
    /// Create the secret with the key from the file, or one minted by
    /// control.
    CreateSecret,
    /// Create the instance role.
    CreateRole,
    /// Set inline policy `name` to `doc` (`None`: the secret's ARN is not
    /// known yet, which only a plan can meet).
    PutRolePolicy {
        /// Policy name.
        name: &'static str,
        /// The document.
        doc: Option<String>,
    },
    /// Remove an inline policy the contract does not have.
    DeleteRolePolicy {
        /// Policy name.
        name: String,
    },
    /// Create the instance profile and put the role in it.
    CreateInstanceProfile,
    /// Put the role in the existing instance profile.
    AddRoleToProfile,
    /// Create security group `name` with `rules`.
    CreateSecurityGroup {
        /// Name.
        name: String,
        /// Description.
        description: String,
        /// Inbound rules.
        rules: Vec<IngressRule>,
    },
    /// Change the inbound rules of group `id`.
    UpdateRules {
        /// `sg-…`.
        id: String,
        /// Rules to add.
        add: Vec<IngressRule>,
        /// Rules to remove.
        remove: Vec<IngressRule>,
    },
    /// Create the recordings bucket.
    CreateBucket,
    /// Tag it with the contract's tags.
    TagBucket,
    /// Block all public access.
    BlockPublicAccess,
    /// Set default encryption (SSE-KMS with `--kms-key`, else SSE-S3).
    EncryptBucket,
    /// Set the TLS-only bucket policy.
    PutBucketPolicy {
        /// The policy.
        policy: String,
    },
    /// Set the lifecycle rule.
    PutLifecycle {
        /// The rule.
        rule: LifecycleRule,
    },
    /// Create the resolver endpoint in the DNS subnets.
    CreateResolverEndpoint {
        /// Name.
        name: String,
        /// Its security group's name.
        security_group: String,
    },
    /// Set a split-DNS entry in control.
    SetSplitDns {
        /// The domain.
        domain: String,
        /// Its nameservers.
        nameservers: Vec<String>,
    },
    /// Create the launch template.
    CreateTemplate {
        /// What it holds.
        data: TemplateData,
    },
    /// Add a version to launch template `id` and make it the default.
    UpdateTemplate {
        /// `lt-…`.
        id: String,
        /// What it holds.
        data: TemplateData,
    },
    /// Launch instance `name` into `subnet` (waited for at the step's end).
    Launch {
        /// `Name`.
        name: String,
        /// Where.
        subnet: Subnet,
    },
    /// Terminate `old`, wait for it, launch `name`, wait for it: one at a
    /// time, so an HA pair always has one router up.
    Replace {
        /// `Name`.
        name: String,
        /// The instance it replaces.
        old: String,
        /// Where.
        subnet: Subnet,
    },
    /// Terminate instances that are not part of the deployment's shape.
    Terminate {
        /// `i-…`.
        ids: Vec<String>,
    },
    /// Set an instance's source/destination check.
    SetSourceDestCheck {
        /// `i-…`.
        id: String,
        /// On or off.
        on: bool,
    },
    /// Add, replace or delete the tailnet route of a table.
    TailnetRoute {
        /// `rtb-…`.
        table: String,
        /// The target ENI (`None`: delete).
        eni: Option<String>,
        /// Replace an existing route.
        replace: bool,
    },
}

/// Items for the report and the actions behind them, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planned {
    /// One per resource (or per changed part of one).
    pub items: Vec<Item>,
    /// What `deploy` does, in order.
    pub actions: Vec<Action>,
}

impl Planned {
    fn item(
        &mut self,
        kind: &'static str,
        name: impl Into<String>,
        change: Change,
        detail: Option<String>,
    ) {
        self.items.push(Item::new(kind, name, change, detail));
    }

    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }
}

/// The auth key's secret: created (from the file, or minted by control),
/// restored from a scheduled deletion, or given the file's key.
pub fn secret(
    info: Option<&SecretInfo>,
    seen: &SecretSeen,
    name: &str,
    deployment: &str,
    from_file: bool,
) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    if let Some(s) = info {
        check_owner(&s.tags, deployment, "secret", name)?;
    }
    match info {
        Some(s) if s.deleted => {
            p.act(Action::RestoreSecret);
            p.item(
                "secret",
                name,
                Change::Update,
                Some("restored from scheduled deletion".into()),
            );
        }
        Some(_) if seen.holds_file_key == Some(false) => {
            p.act(Action::PutSecretValue);
            p.item(
                "secret",
                name,
                Change::Update,
                Some("value replaced from --auth-key-file".into()),
            );
        }
        Some(_) => p.item("secret", name, Change::Unchanged, None),
        None => {
            p.act(Action::CreateSecret);
            let source = if from_file {
                "from --auth-key-file"
            } else {
                "minted by control's admin API"
            };
            p.item("secret", name, Change::Create, Some(source.into()));
        }
    }
    Ok(p)
}

/// The inline policies the instance role should have, by name: reading
/// its own secret (`None` until the ARN is known), writing recordings.
pub fn wanted_policies(
    needs_auth_key: bool,
    secret_arn: Option<&str>,
    bucket: Option<&str>,
    recorder_ui: bool,
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
            Some(spec::recordings_policy(bucket, recorder_ui)),
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
        p.item("IAM inline policy", format!("{name}/{pname}"), change, None);
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

/// Security group `name` with exactly the `wanted` inbound rules.
pub fn security_group(
    seen: Option<&SecurityGroup>,
    name: &str,
    description: &str,
    deployment: &str,
    wanted: &BTreeSet<IngressRule>,
) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    let Some(sg) = seen else {
        p.act(Action::CreateSecurityGroup {
            name: name.to_owned(),
            description: description.to_owned(),
            rules: wanted.iter().cloned().collect(),
        });
        p.item(
            "security group",
            name,
            Change::Create,
            Some(rules_line(wanted)),
        );
        return Ok(p);
    };
    let tags = sg
        .deployment
        .iter()
        .map(|d| (spec::TAG_DEPLOYMENT.to_owned(), d.clone()))
        .collect();
    check_owner(&tags, deployment, "security group", name)?;
    let (add, remove) = spec::rule_diff(wanted, &sg.ingress);
    if add.is_empty() && remove.is_empty() {
        p.item(
            "security group",
            name,
            Change::Unchanged,
            Some(rules_line(wanted)),
        );
        return Ok(p);
    }
    let labels = |rules: &[IngressRule]| {
        rules
            .iter()
            .map(IngressRule::label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let detail = format!("inbound +[{}] -[{}]", labels(&add), labels(&remove));
    p.act(Action::UpdateRules {
        id: sg.id.clone(),
        add,
        remove,
    });
    p.item("security group", name, Change::Update, Some(detail));
    Ok(p)
}

fn rules_line(rules: &BTreeSet<IngressRule>) -> String {
    format!(
        "inbound only: {}",
        rules
            .iter()
            .map(IngressRule::label)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// What the recordings bucket should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketWanted<'a> {
    /// Its name.
    pub name: &'a str,
    /// The deployment owning it.
    pub deployment: &'a str,
    /// The contract's tags.
    pub tags: &'a [(String, String)],
    /// `--kms-key` (default SSE-S3).
    pub kms_key: Option<&'a str>,
    /// The lifecycle days.
    pub lifecycle: Lifecycle,
}

/// The bucket and each setting the contract manages on it: tags, public
/// access block, default encryption, TLS-only policy, lifecycle.
pub fn bucket(seen: &BucketSeen, want: &BucketWanted<'_>) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    let name = want.name;
    let settings = seen.settings.as_ref();
    if let Some(s) = settings {
        check_owner(&s.tags, want.deployment, "bucket", name)?;
    }
    if !seen.exists {
        p.act(Action::CreateBucket);
    }
    let tagged = settings.is_some_and(|s| want.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)));
    let change = |ok: bool| match (seen.exists, ok) {
        (false, _) => Change::Create,
        (true, true) => Change::Unchanged,
        (true, false) => Change::Update,
    };
    let setting = |p: &mut Planned, kind, ok, action, detail: Option<String>| {
        let c = change(ok);
        if c != Change::Unchanged {
            p.act(action);
        }
        p.item(kind, name, c, detail);
    };
    setting(&mut p, "bucket", tagged, Action::TagBucket, None);
    setting(
        &mut p,
        "bucket public access block",
        settings.is_some_and(|s| s.public_access_blocked),
        Action::BlockPublicAccess,
        Some("all four settings on".into()),
    );
    let want_enc = match want.kms_key {
        Some(k) => ("aws:kms".to_owned(), Some(k.to_owned())),
        None => ("AES256".to_owned(), None),
    };
    setting(
        &mut p,
        "bucket encryption",
        settings.is_some_and(|s| s.encryption.as_ref() == Some(&want_enc)),
        Action::EncryptBucket,
        Some(want_enc.0.clone()),
    );
    let policy = spec::tls_only_bucket_policy(name);
    setting(
        &mut p,
        "bucket policy",
        settings
            .and_then(|s| s.policy.as_deref())
            .is_some_and(|s| spec::same_policy(s, &policy)),
        Action::PutBucketPolicy { policy },
        Some("deny aws:SecureTransport=false".into()),
    );
    let l = want.lifecycle;
    let rule = LifecycleRule::wanted(&l);
    setting(
        &mut p,
        "bucket lifecycle",
        settings.is_some_and(|s| s.lifecycle == std::slice::from_ref(&rule)),
        Action::PutLifecycle { rule },
        Some(format!(
            "STANDARD_IA after {} d, GLACIER after {} d, expire after {} d, abort uploads after {} d",
            l.ia_days, l.archive_days, l.expire_days, l.abort_multipart_days
        )),
    );
    Ok(p)
}

/// The resolver endpoint `name` (its security group is planned before).
pub fn resolver_endpoint(
    seen: &ResolverSeen,
    name: &str,
    security_group: &str,
    subnets: &[String],
) -> Planned {
    let mut p = Planned::default();
    match &seen.endpoint {
        Some(ep) => p.item(
            "resolver endpoint",
            name,
            Change::Unchanged,
            Some(ep.id.clone()),
        ),
        None => {
            p.act(Action::CreateResolverEndpoint {
                name: name.to_owned(),
                security_group: security_group.to_owned(),
            });
            p.item(
                "resolver endpoint",
                name,
                Change::Create,
                Some(format!("inbound, in {}", subnets.join(" and "))),
            );
        }
    }
    p
}

/// Split-DNS registration in control, and, when it cannot happen, the note
/// saying why and how to do it by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitDnsPlan {
    /// Entries to set in control.
    pub planned: Planned,
    /// Set when the entries are not registered by this run.
    pub note: Option<String>,
}

/// Each entry set in control only when control's entry differs. `control`
/// is control's current entries (`None`: no admin API given, or the
/// resolvers are not known yet, so control was not asked).
pub fn split_dns(
    entries: &[SplitDnsEntry],
    control: Option<&BTreeMap<String, Vec<String>>>,
) -> SplitDnsPlan {
    let mut planned = Planned::default();
    if entries.iter().any(|e| e.nameservers.is_empty()) {
        return SplitDnsPlan {
            planned,
            note: Some(
                "the entries are registered in control once deploy has created the resolver endpoint".into(),
            ),
        };
    }
    let Some(current) = control else {
        return SplitDnsPlan {
            planned,
            note: Some(
                "pass --control-admin-url and --control-admin-token-file to register these in control, or run `appliance admin dns set-split DOMAIN --resolver IP` there".into(),
            ),
        };
    };
    for e in entries {
        let change = match current.get(&e.domain) {
            Some(now) if *now == e.nameservers => Change::Unchanged,
            Some(_) => Change::Update,
            None => Change::Create,
        };
        let detail = (change != Change::Unchanged).then(|| e.nameservers.join(", "));
        planned.item("split-DNS entry in control", &e.domain, change, detail);
        if change != Change::Unchanged {
            planned.act(Action::SetSplitDns {
                domain: e.domain.clone(),
                nameservers: e.nameservers.clone(),
            });
        }
    }
    SplitDnsPlan {
        planned,
        note: None,
    }
}

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

/// How the instances forward: with SNAT (or for a role that forwards
/// nothing) the source/destination check stays on and no route points at
/// the tailnet; without SNAT the check is off and every route table sends
/// the tailnet to the first instance.
pub fn routing(
    instances: &[Instance],
    tables: &[RouteTable],
    forwards: bool,
    snat: bool,
    base: &str,
) -> Planned {
    let mut p = Planned::default();
    let want_check = snat || !forwards;
    for inst in instances
        .iter()
        .filter(|i| i.source_dest_check != want_check)
    {
        p.act(Action::SetSourceDestCheck {
            id: inst.id.clone(),
            on: want_check,
        });
        let detail = if want_check {
            "enabled (SNAT on)"
        } else {
            "disabled (--no-snat)"
        };
        p.item(
            "source/destination check",
            &inst.id,
            Change::Update,
            Some(detail.into()),
        );
    }
    if forwards {
        let ours: Vec<String> = instances.iter().map(|i| i.eni.clone()).collect();
        let want = if snat {
            None
        } else {
            instances.first().map(|i| i.eni.clone())
        };
        if !snat && want.is_none() {
            // A plan before any instance exists: each table gets a route.
            for t in tables {
                p.item(
                    "route",
                    format!("{TAILNET_CIDR} in {}", t.id),
                    Change::Create,
                    Some("-> the first instance's ENI".into()),
                );
            }
        }
        for change in network::tailnet_route_changes(tables, want.as_deref(), &ours) {
            let (table, item_change, eni, replace) = match change {
                RouteChange::Create { table, eni } => (table, Change::Create, Some(eni), false),
                RouteChange::Replace { table, eni } => (table, Change::Update, Some(eni), true),
                RouteChange::Delete { table } => (table, Change::Delete, None, false),
            };
            p.item(
                "route",
                format!("{TAILNET_CIDR} in {table}"),
                item_change,
                eni.as_ref().map(|e| format!("-> {e}")),
            );
            p.act(Action::TailnetRoute {
                table,
                eni,
                replace,
            });
        }
    }
    if p.items.is_empty() {
        let detail = if snat || !forwards {
            "SNAT on: source/destination check on, no tailnet return routes"
        } else {
            "SNAT off: source/destination check off, tailnet return routes in place"
        };
        p.item("routing", base, Change::Unchanged, Some(detail.into()));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::api::{BucketSettings, IamRole};
    use crate::aws::network::{Exposure, Route};

    const DEP: &str = "prod";

    fn ours() -> BTreeMap<String, String> {
        BTreeMap::from([(spec::TAG_DEPLOYMENT.to_owned(), DEP.to_owned())])
    }

    fn actions(p: &Planned) -> Vec<&Action> {
        p.actions.iter().collect()
    }

    fn changes(p: &Planned) -> Vec<(&str, Change)> {
        p.items.iter().map(|i| (i.kind, i.change)).collect()
    }

    fn subnet(id: &str, az: &str) -> Subnet {
        Subnet {
            id: id.into(),
            az: az.into(),
            cidr: "10.0.1.0/24".into(),
            free_ips: 250,
            exposure: Exposure::Public,
        }
    }

    fn instance(name: &str, id: &str, version: Option<i64>) -> Instance {
        Instance {
            id: id.into(),
            name: name.into(),
            role: "subnet-router".into(),
            state: "running".into(),
            az: "us-east-1a".into(),
            subnet: "subnet-a".into(),
            vpc: "vpc-1".into(),
            instance_type: "c8g.xlarge".into(),
            eni: format!("eni-{id}"),
            private_ip: "10.0.1.10".into(),
            public_ip: None,
            template_version: version,
            hostname: "ip-10-0-1-10".into(),
            source_dest_check: true,
        }
    }

    #[test]
    fn a_missing_secret_is_created_and_a_deleted_one_restored() {
        let none = SecretSeen {
            holds_file_key: None,
        };
        let created = secret(None, &none, "causeway/prod/relay-authkey", DEP, true).expect("ok");
        assert_eq!(actions(&created), [&Action::CreateSecret]);
        assert_eq!(
            created.items[0].detail.as_deref(),
            Some("from --auth-key-file")
        );

        let mut info = SecretInfo {
            arn: "arn:s".into(),
            name: "causeway/prod/relay-authkey".into(),
            deleted: true,
            tags: ours(),
        };
        let restored = secret(Some(&info), &none, &info.name.clone(), DEP, false).expect("ok");
        assert_eq!(actions(&restored), [&Action::RestoreSecret]);

        info.deleted = false;
        let differs = SecretSeen {
            holds_file_key: Some(false),
        };
        let replaced = secret(Some(&info), &differs, "s", DEP, true).expect("ok");
        assert_eq!(actions(&replaced), [&Action::PutSecretValue]);
        let same = SecretSeen {
            holds_file_key: Some(true),
        };
        let kept = secret(Some(&info), &same, "s", DEP, true).expect("ok");
        assert!(kept.actions.is_empty());
        assert_eq!(changes(&kept), [("secret", Change::Unchanged)]);
    }

    #[test]
    fn a_secret_of_another_deployment_is_refused_with_no_action() {
        let info = SecretInfo {
            arn: "arn:s".into(),
            name: "s".into(),
            deleted: false,
            tags: BTreeMap::from([(spec::TAG_DEPLOYMENT.to_owned(), "dev".to_owned())]),
        };
        let seen = SecretSeen {
            holds_file_key: Some(false),
        };
        let err = secret(Some(&info), &seen, "s", DEP, true).expect_err("not ours");
        assert!(
            err.to_string().contains("belongs to deployment \"dev\""),
            "{err}"
        );
    }

    #[test]
    fn iam_from_nothing_creates_role_policies_and_profile() {
        let seen = IamSeen {
            role: None,
            policies: BTreeMap::new(),
            profile: None,
        };
        let wanted = wanted_policies(true, None, Some("b"), false);
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
                    doc: Some(spec::recordings_policy("b", false))
                },
                &Action::CreateInstanceProfile,
            ]
        );
    }

    #[test]
    fn iam_as_wanted_changes_nothing_and_a_stray_policy_goes() {
        let arn = "arn:aws:secretsmanager:us-east-1:1:secret:x";
        let wanted = wanted_policies(true, Some(arn), None, false);
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

    #[test]
    fn a_security_group_gets_exactly_the_wanted_rules() {
        let wanted = spec::appliance_ingress(crate::role::Role::SubnetRouter);
        let created = security_group(None, "sg", "d", DEP, &wanted).expect("ok");
        assert!(matches!(
            created.actions.as_slice(),
            [Action::CreateSecurityGroup { rules, .. }] if rules.len() == 2
        ));
        let mut ingress = wanted.clone();
        let stray = IngressRule {
            protocol: "tcp".into(),
            from_port: 22,
            to_port: 22,
            cidr: "0.0.0.0/0".into(),
        };
        ingress.insert(stray.clone());
        let sg = SecurityGroup {
            id: "sg-1".into(),
            name: "sg".into(),
            ingress,
            deployment: Some(DEP.into()),
        };
        let p = security_group(Some(&sg), "sg", "d", DEP, &wanted).expect("ok");
        assert_eq!(
            actions(&p),
            [&Action::UpdateRules {
                id: "sg-1".into(),
                add: vec![],
                remove: vec![stray]
            }]
        );
        assert_eq!(
            p.items[0].detail.as_deref(),
            Some("inbound +[] -[tcp 22 from 0.0.0.0/0]")
        );
    }

    fn bucket_wanted<'a>(tags: &'a [(String, String)]) -> BucketWanted<'a> {
        BucketWanted {
            name: "rec",
            deployment: DEP,
            tags,
            kms_key: None,
            lifecycle: Lifecycle::new(30, 90, 365).expect("valid"),
        }
    }

    #[test]
    fn a_new_bucket_gets_every_setting_and_a_drifted_one_only_the_fix() {
        let tags = vec![(spec::TAG_DEPLOYMENT.to_owned(), DEP.to_owned())];
        let absent = BucketSeen {
            exists: false,
            settings: None,
        };
        let p = bucket(&absent, &bucket_wanted(&tags)).expect("ok");
        assert_eq!(p.actions.len(), 6);
        assert_eq!(p.actions[0], Action::CreateBucket);
        assert!(p.items.iter().all(|i| i.change == Change::Create));

        let want = bucket_wanted(&tags);
        let drifted = BucketSeen {
            exists: true,
            settings: Some(BucketSettings {
                tags: ours(),
                public_access_blocked: true,
                encryption: Some(("aws:kms".into(), Some("k".into()))),
                policy: Some(spec::tls_only_bucket_policy("rec")),
                lifecycle: vec![LifecycleRule::wanted(&want.lifecycle)],
            }),
        };
        let p = bucket(&drifted, &want).expect("ok");
        assert_eq!(actions(&p), [&Action::EncryptBucket]);
        assert_eq!(
            p.items
                .iter()
                .filter(|i| i.change == Change::Update)
                .map(|i| i.kind)
                .collect::<Vec<_>>(),
            ["bucket encryption"]
        );
    }

    #[test]
    fn split_dns_waits_for_resolvers_and_control_and_sets_only_what_differs() {
        let pending = split_dns(&spec::split_dns_entries(&["corp.".into()], &[]), None);
        assert!(pending.planned.items.is_empty());
        assert!(
            pending
                .note
                .as_deref()
                .is_some_and(|n| n.contains("once deploy has created the resolver endpoint"))
        );
        let entries = spec::split_dns_entries(
            &["corp.internal.".into(), "ec2.internal".into()],
            &["10.0.0.2".into()],
        );
        let no_admin = split_dns(&entries, None);
        assert!(
            no_admin
                .note
                .as_deref()
                .is_some_and(|n| n.contains("--control-admin-url"))
        );
        let control = BTreeMap::from([("corp.internal".to_owned(), vec!["10.0.0.2".to_owned()])]);
        let p = split_dns(&entries, Some(&control));
        assert_eq!(p.note, None);
        assert_eq!(
            actions(&p.planned),
            [&Action::SetSplitDns {
                domain: "ec2.internal".into(),
                nameservers: vec!["10.0.0.2".into()]
            }]
        );
    }

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

    #[test]
    fn without_snat_the_check_goes_off_and_every_table_routes_the_tailnet() {
        let tables = [
            RouteTable {
                id: "rtb-1".into(),
                main: true,
                subnet_ids: vec![],
                routes: vec![],
            },
            RouteTable {
                id: "rtb-2".into(),
                main: false,
                subnet_ids: vec!["subnet-a".into()],
                routes: vec![Route {
                    destination: TAILNET_CIDR.into(),
                    target: "eni-elsewhere".into(),
                }],
            },
        ];
        let pair = [
            instance("r-0", "i-0", Some(1)),
            instance("r-1", "i-1", Some(1)),
        ];
        let p = routing(&pair, &tables, true, false, "r");
        assert_eq!(
            actions(&p),
            [
                &Action::SetSourceDestCheck {
                    id: "i-0".into(),
                    on: false
                },
                &Action::SetSourceDestCheck {
                    id: "i-1".into(),
                    on: false
                },
                &Action::TailnetRoute {
                    table: "rtb-1".into(),
                    eni: Some("eni-i-0".into()),
                    replace: false
                },
                &Action::TailnetRoute {
                    table: "rtb-2".into(),
                    eni: Some("eni-i-0".into()),
                    replace: true
                },
            ]
        );
        let p = routing(&pair, &tables[..1], true, true, "r");
        assert!(p.actions.is_empty());
        assert_eq!(changes(&p), [("routing", Change::Unchanged)]);
    }
}
