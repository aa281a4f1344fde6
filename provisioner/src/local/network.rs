//! Builds and checks the namespaces and veth pairs of a [`Topology`].
//! Every operation converges: whatever already exists as wanted is left
//! alone, and a half-built link is removed and built again.

use std::fmt::Write as _;

use super::netns::{HostLinks, Interface, Netns};
use super::topology::{BridgePlan, LinkEnd, PublicNat, Site, Topology, VethLink};

/// The internet gateway's nftables table (in its own namespace).
const GATEWAY_TABLE: &str = "causeway-igw";

/// Creates whatever of the topology is missing; returns whether anything changed.
pub fn ensure(topo: &Topology) -> anyhow::Result<bool> {
    let mut changed = false;
    for &site in topo.sites() {
        let ns = netns(topo, site);
        if ns.exists()? {
            let lo_up = ns
                .interfaces()?
                .iter()
                .any(|i| i.ifname == "lo" && i.is_up());
            if !lo_up {
                ns.ip(&["link", "set", "lo", "up"])?;
                changed = true;
            }
        } else {
            ns.create()?;
            changed = true;
        }
    }
    for bridge in topo.bridges() {
        changed |= ensure_bridge(&netns(topo, bridge.site), &bridge)?;
    }
    for link in topo.links() {
        changed |= ensure_link(topo, &link)?;
    }
    let routers = topo.routers();
    for r in &routers {
        changed |= ensure_forwarding(&netns(topo, r.site))?;
    }
    changed |= ensure_forwarding(&netns(topo, Site::Igw))?;
    changed |= ensure_gateway_nat(&netns(topo, Site::Igw), &topo.public_nat())?;
    for &site in topo.sites() {
        let ns = netns(topo, site);
        changed |= ensure_default_route(&ns, topo.default_gateway(site))?;
        changed |= ensure_loopback_addrs(&ns, &topo.loopback_addrs(site))?;
        for (dst, via) in topo.static_routes(site) {
            changed |= ensure_route(&ns, dst, via)?;
        }
    }
    let problems = findings(topo)?;
    if !problems.is_empty() {
        anyhow::bail!(
            "the topology is still not as planned: {}",
            problems.join("; ")
        );
    }
    Ok(changed)
}

/// What is missing or wrong, without changing anything. Empty when healthy.
pub fn findings(topo: &Topology) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let existing = Netns::list()?;
    for &site in topo.sites() {
        let name = topo.namespace(site);
        if !existing.contains(&name) {
            out.push(format!("namespace {name} is missing"));
            continue;
        }
        let ns = Netns::new(&name);
        let default = default_route(&ns)?;
        match (default.as_deref(), topo.default_gateway(site)) {
            (None, None) => {}
            (Some(route), None) => out.push(format!(
                "namespace {name} has a default route ({route}; expected none)"
            )),
            (Some(route), Some(gateway)) if routes_via(route, gateway) => {}
            (_, Some(gateway)) => out.push(format!(
                "namespace {name} has no default route via {gateway}"
            )),
        }
        let wanted = topo.loopback_addrs(site);
        if !wanted.is_empty() {
            let ifaces = ns.interfaces()?;
            let lo = ifaces.iter().find(|i| i.ifname == "lo");
            for addr in wanted {
                if !lo.is_some_and(|lo| lo.has_addr(&addr)) {
                    out.push(format!("namespace {name} lacks {addr} on lo"));
                }
            }
        }
        let routes = ns.routes()?;
        for (dst, via) in topo.static_routes(site) {
            if !routes
                .iter()
                .any(|r| r.starts_with(&format!("{dst} ")) && routes_via(r, via))
            {
                out.push(format!("namespace {name} has no route to {dst} via {via}"));
            }
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    for bridge in topo.bridges() {
        let ns = netns(topo, bridge.site);
        let bridge_ok = ns
            .interfaces()?
            .iter()
            .any(|i| i.ifname == bridge.name && i.is_up() && i.has_addr(bridge.addr));
        if !bridge_ok {
            out.push(format!(
                "bridge {} in {} is missing or not configured",
                bridge.name,
                ns.name()
            ));
        }
    }
    for link in topo.links() {
        for end in [&link.a, &link.b] {
            let ns = netns(topo, end.site);
            let ifaces = ns.interfaces()?;
            match ifaces.iter().find(|i| i.ifname == end.ifname) {
                None => out.push(format!("{} in {} is missing", end.ifname, ns.name())),
                Some(i) if !end_configured(end, i) => {
                    out.push(format!("{} in {} is not configured", end.ifname, ns.name()));
                }
                Some(_) => {}
            }
        }
    }
    let igw = netns(topo, Site::Igw);
    let nat = gateway_nat(&igw)?;
    for m in topo.public_nat() {
        if !nat_maps(&nat, &m) {
            out.push(format!(
                "the 1:1 NAT of {} to {} in {} is missing",
                m.public_addr,
                m.uplink_addr,
                igw.name()
            ));
        }
    }
    Ok(out)
}

/// Temporary veth names of this deployment still present in the host namespace.
pub fn host_leftovers(topo: &Topology) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for name in topo.temp_link_names() {
        if HostLinks.exists(&name)? {
            out.push(name);
        }
    }
    Ok(out)
}

/// The namespace of `site`.
pub fn netns(topo: &Topology, site: Site) -> Netns {
    Netns::new(topo.namespace(site))
}

fn ensure_bridge(ns: &Netns, plan: &BridgePlan) -> anyhow::Result<bool> {
    let mut changed = false;
    let ifaces = ns.interfaces()?;
    let bridge = match ifaces.into_iter().find(|i| i.ifname == plan.name) {
        Some(b) => b,
        None => {
            ns.ip(&["link", "add", plan.name, "type", "bridge"])?;
            changed = true;
            ns.interfaces()?
                .into_iter()
                .find(|i| i.ifname == plan.name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "bridge {} in {} vanished after creation",
                        plan.name,
                        ns.name()
                    )
                })?
        }
    };
    if !bridge.has_addr(plan.addr) {
        ns.ip(&["addr", "add", plan.addr, "dev", plan.name])?;
        changed = true;
    }
    if !bridge.is_up() {
        ns.ip(&["link", "set", plan.name, "up"])?;
        changed = true;
    }
    Ok(changed)
}

fn ensure_link(topo: &Topology, link: &VethLink) -> anyhow::Result<bool> {
    let ns_a = netns(topo, link.a.site);
    let ns_b = netns(topo, link.b.site);
    let a = ns_a
        .interfaces()?
        .into_iter()
        .find(|i| i.ifname == link.a.ifname);
    let b = ns_b
        .interfaces()?
        .into_iter()
        .find(|i| i.ifname == link.b.ifname);
    if let (Some(a), Some(b)) = (&a, &b) {
        let fixed_a = configure_end(&ns_a, &link.a, a)?;
        let fixed_b = configure_end(&ns_b, &link.b, b)?;
        return Ok(fixed_a || fixed_b);
    }
    // Half-built (interrupted deploy): remove every trace and start over.
    for (ns, ifname) in [
        (&ns_a, link.a.ifname),
        (&ns_b, link.b.ifname),
        (&ns_a, link.temp_a.as_str()),
        (&ns_b, link.temp_b.as_str()),
    ] {
        if ns.has_link(ifname)? {
            ns.ip(&["link", "delete", "dev", ifname])?;
        }
    }
    for temp in [&link.temp_a, &link.temp_b] {
        HostLinks.delete_if_exists(temp)?;
    }
    HostLinks.ip(&[
        "link",
        "add",
        &link.temp_a,
        "type",
        "veth",
        "peer",
        "name",
        &link.temp_b,
    ])?;
    HostLinks.ip(&["link", "set", "dev", &link.temp_a, "netns", ns_a.name()])?;
    HostLinks.ip(&["link", "set", "dev", &link.temp_b, "netns", ns_b.name()])?;
    ns_a.ip(&["link", "set", "dev", &link.temp_a, "name", link.a.ifname])?;
    ns_b.ip(&["link", "set", "dev", &link.temp_b, "name", link.b.ifname])?;
    for (ns, end) in [(&ns_a, &link.a), (&ns_b, &link.b)] {
        let iface = ns
            .interfaces()?
            .into_iter()
            .find(|i| i.ifname == end.ifname)
            .ok_or_else(|| {
                anyhow::anyhow!("{} in {} vanished after creation", end.ifname, ns.name())
            })?;
        configure_end(ns, end, &iface)?;
    }
    Ok(true)
}

fn configure_end(ns: &Netns, end: &LinkEnd, iface: &Interface) -> anyhow::Result<bool> {
    let mut changed = false;
    if let Some(master) = end.master
        && iface.master.as_deref() != Some(master)
    {
        ns.ip(&["link", "set", "dev", end.ifname, "master", master])?;
        changed = true;
    }
    for addr in &end.addrs {
        if !iface.has_addr(addr) {
            ns.ip(&["addr", "add", addr, "dev", end.ifname])?;
            changed = true;
        }
    }
    if !iface.is_up() {
        ns.ip(&["link", "set", "dev", end.ifname, "up"])?;
        changed = true;
    }
    Ok(changed)
}

fn end_configured(end: &LinkEnd, iface: &Interface) -> bool {
    iface.is_up()
        && end.addrs.iter().all(|a| iface.has_addr(a))
        && end
            .master
            .is_none_or(|m| iface.master.as_deref() == Some(m))
}

/// Each subnet router forwards between its TUN device and the VPC, as a
/// cloud image would have it configured by sysctl; the gateway forwards
/// between the internet and the VPC. (`ip_forward` is per network
/// namespace: this never touches the host's.)
fn ensure_forwarding(ns: &Netns) -> anyhow::Result<bool> {
    let mut get = ns.command("sysctl");
    get.args(["-n", "net.ipv4.ip_forward"]);
    if super::exec::run(&mut get)?.trim() == "1" {
        return Ok(false);
    }
    let mut set = ns.command("sysctl");
    set.args(["-qw", "net.ipv4.ip_forward=1"]);
    super::exec::run(&mut set)?;
    Ok(true)
}

/// The internet gateway's 1:1 NAT: traffic for a router's (or the exit
/// node's) public address goes to its uplink address, and its traffic
/// leaves from the public address, as an AWS internet gateway or an Azure
/// public IP does. A node never sees its public address on an interface;
/// it learns it from control's STUN port.
fn ensure_gateway_nat(igw: &Netns, mappings: &[PublicNat]) -> anyhow::Result<bool> {
    let current = gateway_nat(igw)?;
    if mappings.iter().all(|m| nat_maps(&current, m)) {
        return Ok(false);
    }
    // One nft invocation is one transaction: the table appears whole.
    let mut script = format!(
        "add table ip {GATEWAY_TABLE}; delete table ip {GATEWAY_TABLE}; \
         add table ip {GATEWAY_TABLE}; \
         add chain ip {GATEWAY_TABLE} prerouting {{ type nat hook prerouting priority dstnat; }}; \
         add chain ip {GATEWAY_TABLE} postrouting {{ type nat hook postrouting priority srcnat; }}; "
    );
    for r in mappings {
        let _ = write!(
            script,
            "add rule ip {GATEWAY_TABLE} prerouting ip daddr {public} dnat to {uplink}; \
             add rule ip {GATEWAY_TABLE} postrouting ip saddr {uplink} oifname \"eth0\" snat to {public}; ",
            public = r.public_addr,
            uplink = r.uplink_addr,
        );
    }
    let mut nft = igw.command("nft");
    nft.arg(script);
    super::exec::run(&mut nft)?;
    Ok(true)
}

/// The gateway's NAT table as `nft list` prints it (empty if absent).
fn gateway_nat(igw: &Netns) -> anyhow::Result<String> {
    let mut list = igw.command("nft");
    list.args(["list", "table", "ip", GATEWAY_TABLE]);
    let out = super::exec::output(&mut list, None)?;
    if !out.status.success() {
        return Ok(String::new());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the listed NAT table maps `r` both ways.
fn nat_maps(table: &str, r: &PublicNat) -> bool {
    let has = |needle: String| table.lines().any(|l| l.trim() == needle);
    has(format!(
        "ip daddr {} dnat to {}",
        r.public_addr, r.uplink_addr
    )) && has(format!(
        "ip saddr {} oifname \"eth0\" snat to {}",
        r.uplink_addr, r.public_addr
    ))
}

/// Makes the namespace's default route the wanted one (or none).
fn ensure_default_route(ns: &Netns, gateway: Option<&str>) -> anyhow::Result<bool> {
    let current = default_route(ns)?;
    match (current.as_deref(), gateway) {
        (None, None) => Ok(false),
        (Some(route), Some(gateway)) if routes_via(route, gateway) => Ok(false),
        (_, Some(gateway)) => {
            ns.ip(&["route", "replace", "default", "via", gateway])?;
            Ok(true)
        }
        (Some(_), None) => {
            ns.ip(&["route", "delete", "default"])?;
            Ok(true)
        }
    }
}

/// Puts each of `addrs` on the namespace's loopback.
fn ensure_loopback_addrs(ns: &Netns, addrs: &[String]) -> anyhow::Result<bool> {
    if addrs.is_empty() {
        return Ok(false);
    }
    let ifaces = ns.interfaces()?;
    let lo = ifaces.iter().find(|i| i.ifname == "lo");
    let mut changed = false;
    for addr in addrs {
        if !lo.is_some_and(|lo| lo.has_addr(addr)) {
            ns.ip(&["addr", "add", addr, "dev", "lo"])?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Makes the route to `dst` go via `via`.
fn ensure_route(ns: &Netns, dst: &str, via: &str) -> anyhow::Result<bool> {
    let present = ns
        .routes()?
        .iter()
        .any(|r| r.starts_with(&format!("{dst} ")) && routes_via(r, via));
    if present {
        return Ok(false);
    }
    ns.ip(&["route", "replace", dst, "via", via])?;
    Ok(true)
}

fn default_route(ns: &Netns) -> anyhow::Result<Option<String>> {
    Ok(ns.routes()?.into_iter().find(|r| r.starts_with("default")))
}

fn routes_via(route: &str, gateway: &str) -> bool {
    route
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w == ["via", gateway])
}
