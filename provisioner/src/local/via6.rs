//! `--role via6`: two sites with the same VPC range, told apart by their
//! 4via6 site IDs. How the client reaches each site's VPC host by name
//! (for deploy's verify and for status), and what status shows of each
//! site's router.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, bail};
use causeway_wire::via6::via6_address;
use ipnet::IpNet;
use serde::Serialize;

use super::LocalDeployment;
use super::ha::control_nodes;
use super::services::{self, HTTP_GREETING};
use super::state::{DeploymentState, Node};
use super::topology::{HTTP_PORT, Site, VPC_HOST_ADDR, Via6SitePlan};

/// A fetch of a site's VPC host by its 4via6 name, from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Via6Fetch {
    /// `198-19-1-10-via-SITE.DOMAIN`.
    pub name: String,
    /// What the client's resolver answered for it.
    pub address: Ipv6Addr,
    /// The URL fetched.
    pub url: String,
    /// The answer.
    pub body: String,
}

impl Via6Fetch {
    /// Whether the answer comes from `site`: site 1 serves the VPC page;
    /// site 2's echo server answers with the address it saw, which with
    /// SNAT is site 2's router's VPC address.
    pub fn answer_is_from(&self, site: &Via6SitePlan) -> bool {
        if serves_the_page(site) {
            self.body.contains(HTTP_GREETING)
        } else {
            self.body.trim() == site.router_vpc_addr
        }
    }

    /// What the answer shows, in words.
    pub fn describe(&self, site: &Via6SitePlan) -> String {
        let from = if self.answer_is_from(site) {
            format!("from site {} ({})", site.id, site.vpc_namespace)
        } else {
            format!("NOT FROM SITE {}", site.id)
        };
        if serves_the_page(site) {
            let line = self
                .body
                .lines()
                .find(|l| l.contains(HTTP_GREETING))
                .unwrap_or("(a page without the VPC greeting)");
            format!("{} ({from})", line.trim())
        } else {
            format!(
                "the echo server saw {} ({from}: its router {}'s VPC address, SNAT)",
                self.body.trim(),
                site.router
            )
        }
    }
}

/// Whether `site` is site 1, whose VPC host serves the VPC page (and the
/// database); site 2's runs the echo server.
pub fn serves_the_page(site: &Via6SitePlan) -> bool {
    site.vpc == Site::Vpc
}

/// Resolves `site`'s VPC host by its 4via6 name in the client's
/// namespace, checks the answer is that site's 4via6 address of
/// 198.19.1.10 in the tailnet's range, and fetches the page by name.
pub fn fetch(dep: &LocalDeployment, site: &Via6SitePlan) -> anyhow::Result<Via6Fetch> {
    let cli = dep.netns(Site::Cli);
    let name = site.host_name(&dep.tailnet_domain()?);
    let ula = dep
        .node_status(Node::Client)?
        .tailnet_ula()
        .context("the client's status shows no tailnet IPv6 address, so no 4via6 range")?;
    let host: Ipv4Addr = VPC_HOST_ADDR
        .parse()
        .context("the VPC host's address constant")?;
    let wanted = via6_address(ula, site.id, host);
    let address = services::resolve_v6(&cli, &name)?;
    if address != wanted {
        bail!(
            "{name} resolved to {address} in the client, expected {wanted} (site {}, {VPC_HOST_ADDR} in {ula})",
            site.id
        );
    }
    let url = format!("http://{name}:{HTTP_PORT}/");
    let body = services::http_get(&cli, &url)?;
    Ok(Via6Fetch {
        name,
        address,
        url,
        body,
    })
}

/// One 4via6 site in `status`: its router by its process and control's
/// word, and a fetch by name from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Via6SiteReport {
    /// The site, its router and its VPC.
    pub site: Via6SitePlan,
    /// The router's pid as `state.json` records it (none: never started).
    pub pid: Option<i32>,
    /// Whether that process runs.
    pub alive: bool,
    /// Whether control holds the router online (none: control did not
    /// answer).
    pub online: Option<bool>,
    /// The router's advertised IPv6 routes, by control's word.
    pub advertised: Option<Vec<String>>,
    /// Those control approved.
    pub approved: Option<Vec<String>>,
    /// The fetch by 4via6 name from the client, or why it failed (none:
    /// the client was not started).
    pub fetch: Option<Result<Via6Fetch, String>>,
}

impl Via6SiteReport {
    /// Running, online, one IPv6 route advertised and approved, and the
    /// client's fetch answered by this site.
    pub fn healthy(&self) -> bool {
        self.alive
            && self.online == Some(true)
            && self.approved.as_ref().is_some_and(|a| !a.is_empty())
            && self.advertised == self.approved
            && self
                .fetch
                .as_ref()
                .and_then(|f| f.as_ref().ok())
                .is_some_and(|f| f.answer_is_from(&self.site))
    }
}

/// Each site of a `--role via6` deployment (empty otherwise).
pub fn report(
    dep: &LocalDeployment,
    state: Option<&DeploymentState>,
    client_started: bool,
) -> (Vec<Via6SiteReport>, Option<String>) {
    let sites = dep.topology().via6_sites();
    if sites.is_empty() {
        return (Vec::new(), None);
    }
    let nodes = control_nodes(dep);
    let v6 = |routes: &[IpNet]| -> Vec<String> {
        routes
            .iter()
            .filter(|r| matches!(r, IpNet::V6(_)))
            .map(ToString::to_string)
            .collect()
    };
    let reports = sites
        .into_iter()
        .map(|site| {
            let record = state.and_then(|s| s.processes.get(site.router));
            let seen = nodes
                .as_ref()
                .ok()
                .map(|all| all.iter().find(|n| n.hostname == site.router));
            let fetch = client_started.then(|| fetch(dep, &site).map_err(|e| format!("{e:#}")));
            Via6SiteReport {
                pid: record.map(|r| r.pid),
                alive: record.is_some_and(|r| r.is_alive()),
                online: seen.map(|n| n.is_some_and(|n| n.online)),
                advertised: seen.map(|n| n.map(|n| v6(&n.advertised_routes)).unwrap_or_default()),
                approved: seen.map(|n| n.map(|n| v6(&n.approved_routes)).unwrap_or_default()),
                fetch,
                site,
            }
        })
        .collect();
    (reports, nodes.err().map(|e| format!("{e:#}")))
}

/// The sites as a table, then each fetch.
pub fn render(sites: &[Via6SiteReport], control_error: Option<&str>, out: &mut String) {
    let _ = writeln!(
        out,
        "\n{:<5} {:<8} {:<16} {:>8}  {:<7} {:<7} {:<16} 4VIA6 ROUTE (advertised / approved, control's word)",
        "SITE", "ROUTER", "NAMESPACE", "PID", "ALIVE", "ONLINE", "VPC"
    );
    for s in sites {
        let list = |r: &Option<Vec<String>>| match r {
            Some(r) if r.is_empty() => "NONE".to_owned(),
            Some(r) => r.join(","),
            None => "unknown".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<5} {:<8} {:<16} {:>8}  {:<7} {:<7} {:<16} {} / {}",
            s.site.id,
            s.site.router,
            s.site.router_namespace,
            s.pid.map_or("-".to_owned(), |p| p.to_string()),
            if s.alive { "yes" } else { "NO" },
            s.online.map_or("unknown", |o| if o { "yes" } else { "NO" }),
            s.site.vpc_namespace,
            list(&s.advertised),
            list(&s.approved),
        );
    }
    if let Some(e) = control_error {
        let _ = writeln!(out, "  control did not answer: {e}");
    }
    for s in sites {
        let line = match &s.fetch {
            None => "not checked (the client was not started)".to_owned(),
            Some(Ok(f)) => format!("curl {} ({}) -> {}", f.url, f.address, f.describe(&s.site)),
            Some(Err(e)) => format!("NO ANSWER ({e})"),
        };
        let _ = writeln!(out, "client -> site {} by 4via6 name: {line}", s.site.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::topology::Topology;

    fn sites() -> Vec<Via6SitePlan> {
        Topology::with_via6("t".parse().expect("valid")).via6_sites()
    }

    fn fetched(body: &str) -> Via6Fetch {
        Via6Fetch {
            name: "198-19-1-10-via-1.tailnet.causeway.internal".into(),
            address: "fd7a:115c:a1e0:b1a:0:1:c613:10a".parse().expect("valid"),
            url: "http://198-19-1-10-via-1.tailnet.causeway.internal:80/".into(),
            body: body.into(),
        }
    }

    #[test]
    fn each_sites_answer_is_told_apart() {
        let [one, two] = <[Via6SitePlan; 2]>::try_from(sites()).expect("two sites");
        let page = fetched("<h1>hello from the VPC web server (deployment t)</h1>\n");
        let echo = fetched("198.19.1.2");
        assert!(page.answer_is_from(&one) && !page.answer_is_from(&two));
        assert!(echo.answer_is_from(&two) && !echo.answer_is_from(&one));
        // Site 1's router's address is not site 2's answer.
        assert!(!fetched("198.19.1.1").answer_is_from(&two));
        assert_eq!(
            echo.describe(&two),
            "the echo server saw 198.19.1.2 (from site 2 (cw-t-vpc2): its router router2's VPC address, SNAT)"
        );
        assert_eq!(
            page.describe(&one),
            "<h1>hello from the VPC web server (deployment t)</h1> (from site 1 (cw-t-vpc))"
        );
        assert!(echo.describe(&one).contains("NOT FROM SITE 1"));
    }

    #[test]
    fn a_site_is_healthy_only_when_approved_as_advertised_and_answering() {
        let [one, _] = <[Via6SitePlan; 2]>::try_from(sites()).expect("two sites");
        let route = "fd7a:115c:a1e0:b1a:0:1:c613:100/120".to_owned();
        let good = Via6SiteReport {
            site: one,
            pid: Some(7),
            alive: true,
            online: Some(true),
            advertised: Some(vec![route.clone()]),
            approved: Some(vec![route]),
            fetch: Some(Ok(fetched("hello from the VPC web server"))),
        };
        assert!(good.healthy());
        let unapproved = Via6SiteReport {
            approved: Some(Vec::new()),
            ..good.clone()
        };
        assert!(!unapproved.healthy());
        let wrong_site = Via6SiteReport {
            fetch: Some(Ok(fetched("198.19.1.2"))),
            ..good.clone()
        };
        assert!(!wrong_site.healthy());
        let unreachable = Via6SiteReport {
            fetch: Some(Err("timeout".into())),
            ..good
        };
        assert!(!unreachable.healthy());
        let mut text = String::new();
        render(&[unreachable], None, &mut text);
        assert!(
            text.contains("client -> site 1 by 4via6 name: NO ANSWER (timeout)"),
            "{text}"
        );
        assert!(
            text.contains(
                "fd7a:115c:a1e0:b1a:0:1:c613:100/120 / fd7a:115c:a1e0:b1a:0:1:c613:100/120"
            ),
            "{text}"
        );
    }
}
