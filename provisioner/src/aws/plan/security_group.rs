//! A security group with exactly the wanted inbound rules.

use std::collections::BTreeSet;

use super::{Action, Planned};
use crate::aws::api::SecurityGroup;
use crate::aws::report::Change;
use crate::aws::spec::{self, IngressRule, check_owner};

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
    if rules.is_empty() {
        return "no inbound rules".to_owned();
    }
    format!(
        "inbound only: {}",
        rules
            .iter()
            .map(IngressRule::label)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::plan::samples::{DEP, actions};

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
}
