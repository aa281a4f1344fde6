//! Forwarding: the source/destination check and the tailnet return routes.

use super::{Action, Planned};
use crate::aws::api::Instance;
use crate::aws::network::{self, RouteChange, RouteTable, TAILNET_CIDR};
use crate::aws::report::Change;
use crate::role::Role;

/// How the instances forward: with SNAT (or for a role that forwards
/// nothing) the source/destination check stays on and no route points at
/// the tailnet; without SNAT the check is off and every route table sends
/// the tailnet to the first instance, unless it already sends it to one
/// of the instances (the HA primary moves it to itself, and a second
/// deploy leaves it there). An exit node and an app connector have the
/// check off and no return routes: they forward to the internet (to
/// arbitrary destinations), masqueraded.
pub fn routing(
    instances: &[Instance],
    tables: &[RouteTable],
    role: Role,
    snat: bool,
    base: &str,
) -> Planned {
    let mut p = Planned::default();
    let forwards = role.advertises_routes();
    // (who, what it forwards) for the roles that forward to the internet.
    let internet = match role {
        Role::ExitNode => Some(("exit node", "forwards the tailnet's internet traffic")),
        Role::AppConnector => Some(("app connector", "forwards to what its domains resolve to")),
        Role::SubnetRouter | Role::Via6 | Role::Recorder | Role::Control | Role::Relay => None,
    };
    let want_check = internet.is_none() && (snat || !forwards);
    for inst in instances
        .iter()
        .filter(|i| i.source_dest_check != want_check)
    {
        p.act(Action::SetSourceDestCheck {
            id: inst.id.clone(),
            on: want_check,
        });
        let detail = match internet {
            _ if want_check => "enabled (SNAT on)".to_owned(),
            Some((who, what)) => format!("disabled ({who}: {what})"),
            None => "disabled (--no-snat)".to_owned(),
        };
        p.item(
            "source/destination check",
            &inst.id,
            Change::Update,
            Some(detail),
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
        let detail = match internet {
            Some((who, _)) => {
                format!("{who}: source/destination check off, no tailnet return routes")
            }
            None if snat || !forwards => {
                "SNAT on: source/destination check on, no tailnet return routes".to_owned()
            }
            None => {
                "SNAT off: source/destination check off, tailnet return routes in place".to_owned()
            }
        };
        p.item("routing", base, Change::Unchanged, Some(detail));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::network::Route;
    use crate::aws::plan::samples::{actions, changes, instance};

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
        let p = routing(&pair, &tables, Role::SubnetRouter, false, "r");
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
        let p = routing(&pair, &tables[..1], Role::SubnetRouter, true, "r");
        assert!(p.actions.is_empty());
        assert_eq!(changes(&p), [("routing", Change::Unchanged)]);
    }

    #[test]
    fn an_exit_node_and_an_app_connector_have_the_check_off_and_no_return_routes() {
        let tables = [RouteTable {
            id: "rtb-1".into(),
            main: true,
            subnet_ids: vec![],
            routes: vec![],
        }];
        for (role, who, what) in [
            (
                Role::ExitNode,
                "exit node",
                "forwards the tailnet's internet traffic",
            ),
            (
                Role::AppConnector,
                "app connector",
                "forwards to what its domains resolve to",
            ),
        ] {
            let one = [instance("x", "i-0", Some(1))];
            let p = routing(&one, &tables, role, true, "x");
            assert_eq!(
                actions(&p),
                [&Action::SetSourceDestCheck {
                    id: "i-0".into(),
                    on: false
                }]
            );
            assert_eq!(
                p.items[0].detail.as_deref(),
                Some(format!("disabled ({who}: {what})").as_str())
            );
            let mut off = one.clone();
            off[0].source_dest_check = false;
            let p = routing(&off, &tables, role, true, "x");
            assert!(p.actions.is_empty(), "{:?}", p.actions);
            assert_eq!(
                p.items[0].detail.as_deref(),
                Some(
                    format!("{who}: source/destination check off, no tailnet return routes")
                        .as_str()
                )
            );
        }
    }
}
