//! An exit node's egress interface: the shell of
//! `causeway_netconf::plan_egress_routing`. It finds the interface named
//! by `exit_node.egress_interface` or `egress_mac` before the node joins
//! (a bad key stops the start with an error naming it), installs the
//! policy routing once the node has its addresses, puts the gateway route
//! back whenever the kernel removed it (the interface went down and came
//! back), and removes everything on stop and at start (a crash leaves it
//! behind).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use causeway_netconf::{
    EgressError, EgressInterface, EgressRoutingPlan, ExitEgress, RouteTable, apply_egress_routing,
    clear_egress_routing, plan_egress_routing, read_egress_interface,
};
use ipnet::IpNet;

use super::status::{self, EgressStatus, NodeStatus};
use crate::config::ExitNodeConfig;

/// How often the installed routes are checked and put back: the kernel
/// deletes the gateway route when the egress interface goes down, and
/// nothing else adds it again when the interface is back.
const RECHECK: Duration = Duration::from_secs(2);

/// The egress interface found and checked at start, before anything changed.
pub struct EgressSetup {
    interface: EgressInterface,
    gateway: Option<IpAddr>,
    /// `egress_interface` or `egress_mac`.
    key: &'static str,
    /// Its value, as written.
    value: String,
}

impl EgressSetup {
    /// Finds the configured egress interface and checks that a plan can be
    /// made for it; `None` without one. Changes nothing. Errors name the
    /// key at fault.
    pub async fn resolve(exit: &ExitNodeConfig, tun: &str) -> anyhow::Result<Option<Self>> {
        let Some((selector, key, value)) = exit.egress() else {
            return Ok(None);
        };
        let table = RouteTable::new()
            .await
            .context("opening rtnetlink for the egress interface")?;
        let interface = read_egress_interface(&table, &selector)
            .await
            .map_err(|e| explain(e, key, &value, exit.egress_gateway))?;
        let setup = Self {
            interface,
            gateway: exit.egress_gateway,
            key,
            value,
        };
        setup.plan(tun, &BTreeSet::new())?;
        Ok(Some(setup))
    }

    /// The egress interface's name.
    pub fn interface_name(&self) -> &str {
        &self.interface.name
    }

    /// The plan, with `keep_main` (the tailnet, the node's own subnet
    /// routes) kept on the main table.
    pub fn plan(
        &self,
        tun: &str,
        keep_main: &BTreeSet<IpNet>,
    ) -> anyhow::Result<EgressRoutingPlan> {
        plan_egress_routing(tun, &self.interface, self.gateway, keep_main)
            .map_err(|e| explain(e, self.key, &self.value, self.gateway))
    }
}

/// What the firewall needs of the plan.
pub fn firewall_egress(plan: &EgressRoutingPlan) -> ExitEgress {
    ExitEgress {
        interface: plan.interface.clone(),
        ipv6: plan.routes_ipv6(),
    }
}

/// The installed egress routing and the task that keeps it in place.
pub struct EgressDriver {
    table: RouteTable,
    keeper: tokio::task::JoinHandle<()>,
}

impl EgressDriver {
    /// Removes what an earlier run left, installs `plan`, and keeps it
    /// installed until [`EgressDriver::stop`].
    pub async fn start(
        plan: EgressRoutingPlan,
        status: Arc<Mutex<NodeStatus>>,
    ) -> anyhow::Result<Self> {
        let table = RouteTable::new()
            .await
            .context("opening rtnetlink for egress routing")?;
        clear_egress_routing(&table)
            .await
            .context("removing egress routing left by an earlier run")?;
        apply_egress_routing(&table, &plan).await.with_context(|| {
            format!(
                "routing forwarded traffic out of {} via {}",
                plan.interface, plan.gateway
            )
        })?;
        tracing::info!(
            interface = %plan.interface,
            gateway = %plan.gateway,
            ipv6 = plan.routes_ipv6(),
            "forwarded internet traffic leaves by the egress interface"
        );
        warn_on_strict_reverse_path_filter(&plan.interface);
        show(&status, &plan, None);
        let keeper_table = RouteTable::new()
            .await
            .context("opening rtnetlink for egress routing")?;
        let keeper = tokio::spawn(keep_installed(keeper_table, plan, status));
        Ok(Self { table, keeper })
    }

    /// Stops the keeper and removes the rule and the table.
    pub async fn stop(self) {
        self.keeper.abort();
        let _ = self.keeper.await;
        if let Err(e) = clear_egress_routing(&self.table).await {
            tracing::error!(error = %format!("{e:#}"), "removing egress routing");
        }
    }
}

/// Re-applies the plan every [`RECHECK`]; says once when it cannot (the
/// interface is down: forwarded traffic is unreachable meanwhile) and once
/// when it can again.
async fn keep_installed(
    table: RouteTable,
    plan: EgressRoutingPlan,
    status: Arc<Mutex<NodeStatus>>,
) {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut failing = false;
    loop {
        tick.tick().await;
        match apply_egress_routing(&table, &plan).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(interface = %plan.interface, "egress route back in place");
                show(&status, &plan, None);
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                let detail = format!("{e:#}");
                tracing::warn!(
                    interface = %plan.interface,
                    error = %detail,
                    "egress route cannot be installed; forwarded internet traffic is unreachable until it can"
                );
                show(&status, &plan, Some(detail));
            }
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "egress route still missing"),
        }
    }
}

/// Strict reverse-path filtering (`rp_filter = 1`, the larger of `all`
/// and the interface's value applies) drops the replies that come back by
/// the egress interface: the reverse lookup of an internet source, which
/// no `iif` rule matches, finds the main table's public interface.
fn warn_on_strict_reverse_path_filter(interface: &str) {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"))
            .ok()
            .and_then(|v| v.trim().parse::<u8>().ok())
            .unwrap_or(0)
    };
    if read("all").max(read(interface)) == 1 {
        tracing::warn!(
            interface,
            "strict reverse-path filtering drops replies on the egress interface; set rp_filter to 2 (loose)"
        );
    }
}

fn show(status: &Arc<Mutex<NodeStatus>>, plan: &EgressRoutingPlan, failure: Option<String>) {
    let shown = EgressStatus {
        interface: plan.interface.clone(),
        address: plan.address,
        gateway: plan.gateway,
        ipv6_gateway: plan.ipv6_gateway,
        installed: failure.is_none(),
        detail: failure.unwrap_or_default(),
    };
    status::set(status, |s| s.egress = Some(shown));
}

/// The error with the config key at fault and its value.
fn explain(
    error: EgressError,
    key: &'static str,
    value: &str,
    gateway: Option<IpAddr>,
) -> anyhow::Error {
    if error.is_about_gateway() {
        let written = gateway.map_or("not set".to_owned(), |g| format!("\"{g}\""));
        anyhow::anyhow!(
            "exit_node.egress_gateway ({written}) with exit_node.{key} = \"{value}\": {error}"
        )
    } else {
        anyhow::anyhow!("exit_node.{key} = \"{value}\": {error}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_at_fault_and_its_value() {
        let interface = EgressError::NoSuchMac {
            mac: "0a:1b:2c:3d:4e:5f".parse().expect("mac"),
        };
        let gateway = EgressError::GatewayOutsideSubnet {
            gateway: "198.19.9.1".parse().expect("ip"),
            interface: "eth1".to_owned(),
            subnets: "198.19.3.0/24".to_owned(),
        };
        let default_gateway = EgressError::NoDefaultGateway {
            subnet: "198.19.3.1/32".parse().expect("net"),
            interface: "eth1".to_owned(),
        };

        let interface = explain(interface, "egress_mac", "0a:1b:2c:3d:4e:5f", None);
        let gateway = explain(
            gateway,
            "egress_interface",
            "eth1",
            Some("198.19.9.1".parse().expect("ip")),
        );
        let default_gateway = explain(default_gateway, "egress_interface", "eth1", None);

        assert_eq!(
            interface.to_string(),
            "exit_node.egress_mac = \"0a:1b:2c:3d:4e:5f\": no network interface has MAC address 0a:1b:2c:3d:4e:5f"
        );
        assert!(
            gateway.to_string().starts_with(
                "exit_node.egress_gateway (\"198.19.9.1\") with exit_node.egress_interface = \"eth1\": gateway 198.19.9.1 is not a host address"
            ),
            "{gateway}"
        );
        assert!(
            default_gateway
                .to_string()
                .starts_with("exit_node.egress_gateway (not set) with"),
            "{default_gateway}"
        );
    }
}
