//! Split DNS: the Route 53 Resolver inbound endpoint, and the entries
//! registered in control.

use std::collections::BTreeMap;

use super::{Action, Planned};
use crate::aws::observe::ResolverSeen;
use crate::aws::report::Change;
use crate::aws::spec::SplitDnsEntry;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::plan::samples::actions;
    use crate::aws::spec;

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
}
