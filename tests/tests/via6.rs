//! 4via6 end to end: two sites use the same IPv4 range (198.19.50.0/24,
//! a host at .5 in each) behind two subnet routers, site 7 and site 8.
//! Each router advertises its range as an IPv6 route in the tailnet's
//! range, which control approves through `site:SITE:PREFIX` in
//! `autoApprovers`. The client resolves `198-19-50-5-via-7.DOMAIN` on its
//! node resolver and fetches from it by that name: the router translates
//! IPv6 to IPv4 and back, and the answer comes from site 7's host (it sees
//! site 7's router); the same for site 8. A policy that names only site
//! 7's range (`site:7:198.19.50.0/24:8000`) lets the client reach site 7
//! and not site 8.
//!
//! No timing is asserted: the waits are generous deadlines.

use causeway_e2e::local::{Node, Site};
use causeway_e2e::via6::{self, ROUTER_TAG, SITE_HOST, SITE_RANGE};
use causeway_e2e::{TestDeployment, VPC_SUBNET, WAIT, tailnet_ipv4, wait_until};

const RESOLVER: &str = "@100.100.100.100";

fn dig(t: &TestDeployment, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["dig", RESOLVER, "+time=2", "+tries=1", "+short"];
    full.extend_from_slice(args);
    let ran = t.run_in(Site::Cli, &full);
    anyhow::ensure!(ran.success(), "{ran}");
    Ok(ran.stdout.trim().to_owned())
}

/// Sets the tailnet policy from `acls` (a JSON array), with the approvals
/// the deployment and both sites need.
fn set_policy(t: &TestDeployment, acls: &str) {
    let path = t.dep().paths().root().join("via6-policy.hujson");
    std::fs::write(
        &path,
        format!(
            r#"{{"tagOwners": {{"tag:subnet-router": ["autogroup:admin"], "{ROUTER_TAG}": ["autogroup:admin"]}},
                "autoApprovers": {{"routes": {{
                    "{VPC_SUBNET}": ["tag:subnet-router"],
                    "site:7:{SITE_RANGE}": ["{ROUTER_TAG}"],
                    "site:8:{SITE_RANGE}": ["{ROUTER_TAG}"]}}}},
                "acls": {acls}}}"#
        ),
    )
    .expect("writing the policy");
    t.admin(&["policy", "set", path.to_str().expect("a UTF-8 path")])
        .expect_success();
}

#[test]
fn two_sites_with_the_same_range_are_reached_by_their_via_names() {
    let mut t = TestDeployment::deploy();
    set_policy(
        &t,
        r#"[{"action": "accept", "src": ["*"], "dst": ["*:*"]}]"#,
    );
    let key = t.admin_json(&["keys", "create", "--reusable", "--tag", ROUTER_TAG])["key"]
        .as_str()
        .expect("an auth key")
        .to_owned();
    let sites = [
        via6::start_site(&mut t, 7, 1, &key),
        via6::start_site(&mut t, 8, 2, &key),
    ];

    // The tailnet's domain, from the router's reverse name.
    let router = tailnet_ipv4(&t.status(Node::Router).expect("router status"))
        .expect("the router's tailnet address");
    let name = wait_until(WAIT, "the router's name by PTR", || {
        let name = dig(&t, &["-x", &router])?;
        anyhow::ensure!(name.starts_with("router."), "PTR {router}: {name:?}");
        Ok(name)
    });
    let domain = name.trim_start_matches("router.").trim_end_matches('.');
    let host = SITE_HOST.replace('.', "-");

    for site in &sites {
        // Each router advertises its site's IPv6 route, approved by the
        // site key.
        let status = t
            .status_in(&site.router_ns, &site.node.state_dir)
            .expect("router status");
        let advertised = status["advertised_routes"].to_string();
        assert!(
            advertised.contains(&format!(":b1a:0:{}:c613:3200/120", site.id)),
            "site {}: {advertised}",
            site.id
        );

        let via = format!("{host}-via-{}.{domain}", site.id);
        let aaaa = dig(&t, &[&via, "AAAA"]).expect("AAAA");
        assert!(
            aaaa.ends_with(&format!(":b1a:0:{}:c613:3205", site.id)),
            "{via}: {aaaa:?}"
        );
        // By name, through the client's resolver: the host at this site
        // answers, and it saw this site's router.
        let url = format!("http://{via}:8000/");
        let body = wait_until(WAIT, &format!("{url} to answer"), || {
            let ran = t.curl(Site::Cli, &url, 3);
            anyhow::ensure!(ran.success(), "{ran}");
            Ok(ran.stdout.trim().to_owned())
        });
        assert_eq!(body, site.router_lan, "{url} reached the wrong site");
        // ICMP: an echo through the translation.
        let ping = t.run_in(Site::Cli, &["ping", "-6", "-c", "1", "-W", "3", &aaaa]);
        assert!(ping.success(), "ping {aaaa}: {ping}");
    }

    // Both routers translated both ways, through flows they track, and
    // refused nothing.
    for site in &sites {
        let status = t
            .status_in(&site.router_ns, &site.node.state_dir)
            .expect("router status");
        let via6 = &status["via6"];
        assert!(
            via6["to_ipv4"].as_u64() > Some(0) && via6["to_ipv6"].as_u64() > Some(0),
            "site {}: {via6}",
            site.id
        );
        assert!(via6["flows"].as_u64() > Some(0), "site {}: {via6}", site.id);
        assert_eq!(
            status["dropped_by_reason"]["via6"], 0,
            "site {}: {status}",
            site.id
        );
    }

    // A policy naming only site 7's range by its site ID.
    set_policy(
        &t,
        &format!(
            r#"[{{"action": "accept", "src": ["*"], "dst": ["tag:subnet-router:*", "site:7:{SITE_RANGE}:8000"]}}]"#
        ),
    );
    let url = |site: u16| format!("http://{host}-via-{site}.{domain}:8000/");
    wait_until(WAIT, "site 8 to be out of reach", || {
        let ran = t.curl(Site::Cli, &url(8), 2);
        anyhow::ensure!(!ran.success(), "still reached: {ran}");
        Ok(())
    });
    let ran = t.curl(Site::Cli, &url(7), 3);
    assert!(ran.success(), "site 7 under the new policy: {ran}");
    assert_eq!(ran.stdout.trim(), sites[0].router_lan);
    t.finish();
}
