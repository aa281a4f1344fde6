//! 4via6 sites beside a test deployment, for `tests/tests/via6.rs`: two
//! sites that use the same IPv4 range, each a LAN namespace behind its own
//! subnet router, told apart by site ID.
//!
//! ```text
//! site S   router  cw-NAME-vS   198.18.0.(40+i) on the public bridge,
//!                               lan0 198.19.50.i/24; routes SITE_RANGE
//!                               with site_id = S
//!          LAN     cw-NAME-lS   eth0 198.19.50.5/24, default via the
//!                               router; echo server on port 8000
//! ```
//!
//! The echo server answers with the caller's address: the router's LAN
//! address after its masquerade, so a fetch says which site answered.

use crate::internet::ECHO_PORT;
use crate::local::Netns;
use crate::{ExtraNode, TestDeployment, WAIT, rewrite_file, wait_until};

/// The IPv4 range both sites use.
pub const SITE_RANGE: &str = "198.19.50.0/24";
/// The host with the echo server, at both sites.
pub const SITE_HOST: &str = "198.19.50.5";
/// The tag of the site routers' auth key.
pub const ROUTER_TAG: &str = "tag:via-router";

/// One running site.
pub struct Site {
    /// Its site ID.
    pub id: u16,
    /// Its router's address on the LAN: what the echo server sees.
    pub router_lan: String,
    /// The router's namespace.
    pub router_ns: Netns,
    /// The LAN namespace.
    pub lan_ns: Netns,
    /// The router node.
    pub node: ExtraNode,
}

/// Starts site `id`, the `index`-th (1, 2, …): its LAN with an echo
/// server, and its router joined with `auth_key` (tagged [`ROUTER_TAG`]).
/// Returns once the router is registered.
pub fn start_site(t: &mut TestDeployment, id: u16, index: u8, auth_key: &str) -> Site {
    let public = format!("198.18.0.{}", 40 + index);
    let router_lan = format!("198.19.50.{index}");
    let router_ns = t.add_bridge_namespace(&format!("v{id}"), &format!("{public}/24"));
    let lan_ns = t.add_namespace_behind(&format!("l{id}"), &router_ns, "lan0");
    for (ns, args) in [
        (
            &router_ns,
            vec!["addr", "add", &format!("{router_lan}/24"), "dev", "lan0"],
        ),
        (&router_ns, vec!["link", "set", "dev", "lan0", "up"]),
        (
            &lan_ns,
            vec!["addr", "add", &format!("{SITE_HOST}/24"), "dev", "eth0"],
        ),
        (&lan_ns, vec!["link", "set", "dev", "eth0", "up"]),
        (&lan_ns, vec!["route", "add", "default", "via", &router_lan]),
    ] {
        ns.ip(&args)
            .unwrap_or_else(|e| panic!("site {id}: ip {args:?}: {e:#}"));
    }
    let root = t.dep().paths().root().to_owned();
    let script = root.join("echo.py");
    std::fs::write(&script, crate::local::services::ECHO_SERVER_PY)
        .expect("writing the echo server");
    let mut server = lan_ns.command("python3");
    server
        .arg(&script)
        .arg(root.join(format!("site{id}-callers.log")))
        .arg(ECHO_PORT);
    t.spawn_recorded(
        &format!("site{id}-echo"),
        lan_ns.name(),
        &mut server,
        &root.join(format!("site{id}-echo.log")),
    );

    let node = t.write_extra_node(
        &format!("site{id}"),
        auth_key,
        format!("{public}:41641").parse().expect("a socket address"),
        "cw0",
        false,
    );
    rewrite_file(&node.config, |old| {
        format!(
            "{old}\n[subnet_router]\n[[subnet_router.routes]]\nprefix = \"{SITE_RANGE}\"\nsite_id = {id}\n"
        )
    });
    t.start_extra_node(&node, &router_ns);
    wait_until(WAIT, &format!("site {id}'s router to register"), || {
        let s = t.status_in(&router_ns, &node.state_dir)?;
        anyhow::ensure!(s["node_id"].is_number(), "{s}");
        Ok(())
    });
    Site {
        id,
        router_lan,
        router_ns,
        lan_ns,
        node,
    }
}
