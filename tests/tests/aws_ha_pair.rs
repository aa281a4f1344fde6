//! An HA subnet-router pair deployed with `provisioner deploy --cloud aws
//! --ha` against moto, then booted for real: each "instance" is an
//! appliance in its own namespace, run with the launch template's user data
//! as its config (only the state directory and the EC2 hostname filled in,
//! as the image would), fetching its auth key from Secrets Manager on moto.
//! Control approves the route for both; `provisioner status` asks control
//! and names the primary, and names the other one after a failover.
//!
//! The pair runs without SNAT (`--no-snat`): the VPC's route tables send
//! the tailnet to a router, and each appliance, told the tables in its user
//! data and its own interface by a fake IMDS in its namespace, points them
//! at itself on moto when control makes it primary (EC2 ReplaceRoute).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use causeway_e2e::aws::{
    MOTO_PORT, MotoBesideControl, aws, launch_template_user_data, moto_beside_control, provisioner,
    public_vpc,
};
use causeway_e2e::local::topology::CONTROL_ADDR;
use causeway_e2e::{TestDeployment, VPC_SUBNET, binary, wait_until};
use causeway_test_support::{CLIENT_ENV, FakeImds};
use serde_json::Value;

/// The instances' addresses on the public bridge.
const INSTANCE_ADDRS: [&str; 2] = ["198.18.0.61/24", "198.18.0.62/24"];

#[test]
fn ha_pair_boots_from_user_data_and_status_names_the_primary() {
    let mut t = TestDeployment::deploy();
    let root = t.dep().paths().root().to_owned();
    // The local router advertises the same subnet; it leaves the pair alone.
    t.process("router").stop(Duration::from_secs(10));

    let MotoBesideControl {
        moto,
        control_url,
        control_key,
    } = moto_beside_control(&t);
    let vpc = public_vpc(&t);
    let deploy = [
        "deploy",
        "--role",
        "subnet-router",
        "--ha",
        "--vpc",
        &vpc,
        "--route",
        VPC_SUBNET,
        "--control-url",
        &control_url,
        "--control-public-key",
        &control_key,
        "--no-snat",
    ];
    // Nothing has booted yet: the health wait comes after the boot.
    let first_deploy =
        provisioner(&t, &[&deploy[..], &["--health-timeout", "0"]].concat()).expect_success();
    // The instance role may move the return route, in the VPC's tables only.
    let tables = route_tables(&t, &vpc);
    assert_eq!(tables.len(), 2, "the main table and the public one");
    let scope = format!(
        "ec2:CreateRoute, ec2:ReplaceRoute on {}; ec2:DescribeRouteTables on *",
        tables.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    assert!(first_deploy.stdout.contains(&scope), "{first_deploy}");

    let status = status_json(&t, 3);
    let instances = status["instances"].as_array().expect("instances").clone();
    assert_eq!(instances.len(), 2, "{status}");
    for i in &instances {
        assert_eq!(
            i["ha_role"], "not registered",
            "nothing has booted: {status}"
        );
    }

    // Boot both from the launch template's user data.
    let user_data = launch_template_user_data(&t, "subnet-router");
    assert!(
        user_data.contains("auth_key_secret = \"arn:aws:secretsmanager:"),
        "{user_data}"
    );
    let listed = format!(
        "aws_route_tables = [{}]",
        tables
            .keys()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(user_data.contains(&listed), "{listed} in:\n{user_data}");
    let mut hostnames = Vec::new();
    // Each instance's interface by hostname; the fake IMDS serving them.
    let mut enis = BTreeMap::new();
    let mut imds = Vec::new();
    for (n, (instance, addr)) in instances.iter().zip(INSTANCE_ADDRS).enumerate() {
        let hostname = instance["hostname"].as_str().expect("hostname").to_owned();
        assert!(hostname.starts_with("ip-"), "an EC2 hostname: {instance}");
        let ns = t.add_bridge_namespace(&format!("ha{n}"), addr);
        let id = instance["id"].as_str().expect("instance id");
        let [eni, mac] = ["NetworkInterfaceId", "MacAddress"].map(|field| {
            aws(
                &t,
                &[
                    "ec2",
                    "describe-instances",
                    "--instance-ids",
                    id,
                    "--query",
                    &format!("Reservations[0].Instances[0].NetworkInterfaces[0].{field}"),
                ],
            )
        });
        assert!(eni.starts_with("eni-"), "{id}: {eni}");
        ns.ip(&["addr", "add", "169.254.169.254/32", "dev", "lo"])
            .expect("the metadata address");
        let fake = FakeImds::inside(|p| ns.command(p), "169.254.169.254", 80);
        fake.set("mac", Some(&mac));
        fake.set("interface-id", Some(&eni));
        imds.push(fake);
        enis.insert(hostname.clone(), eni);
        let state_dir = root.join(format!("ha{n}"));
        let config = root.join(format!("ha{n}.toml"));
        std::fs::write(&config, boot_config(&user_data, &state_dir, &hostname))
            .expect("writing the config");
        let mut cmd = ns.command(binary("appliance"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .envs(CLIENT_ENV)
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://{CONTROL_ADDR}:{MOTO_PORT}"),
            );
        t.spawn_recorded(
            &format!("ha{n}"),
            ns.name(),
            &mut cmd,
            &root.join(format!("ha{n}.log")),
        );
        hostnames.push(hostname);
    }

    // deploy pointed every table at instance 0 (traffic flows before
    // control picks); the primary then points them at itself.
    let first = wait_for_primary(&t, &hostnames, None);
    let _ = wait_for_route(&t, &vpc, &enis[&first], Duration::from_secs(30));
    let status = status_json(&t, 0);
    assert_eq!(
        roles(&status),
        expected_roles(&hostnames, &first, "standby"),
        "{status}"
    );

    // deploy again: nothing to change, and this time it waits for the
    // appliances' health by control's word, and says what control knows.
    // Both joined, so the key it minted is revoked and the secret cleared:
    // the one update.
    let again = provisioner(&t, &deploy).expect_success();
    assert!(
        again.stdout.contains("0 create, 1 update, 0 delete"),
        "{again}"
    );
    assert!(
        again
            .stdout
            .contains("revoked in control and cleared from the secret"),
        "{again}"
    );
    let healthy_lines = again
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("appliance healthy (node ip-"))
        .count();
    assert_eq!(healthy_lines, 2, "{again}");
    assert!(
        again.stdout.contains(&format!("primary for {VPC_SUBNET}")),
        "{again}"
    );

    // ... and deploy left the route with the primary, instance 0 or not.
    assert_eq!(
        route_tables(&t, &vpc).into_values().collect::<Vec<_>>(),
        [Some(enis[&first].clone()), Some(enis[&first].clone())]
    );

    // The standby leaves the route alone, and says so.
    let standby = hostnames.iter().position(|h| *h != first).expect("two");
    let shown = appliance_status(&t, standby);
    for table in tables.keys() {
        assert!(
            shown.contains(&format!(
                "vpc route {table} ok: standby, the primary points this route at itself (when this node started: 100.64.0.0/10 -> eni-"
            )),
            "{shown}"
        );
    }

    // Fail over: the primary stops; control moves the route; status follows.
    let index = hostnames.iter().position(|h| *h == first).expect("known");
    let stopped_at = Instant::now();
    t.process(&format!("ha{index}"))
        .stop(Duration::from_secs(10));
    let stop_took = stopped_at.elapsed();
    let second = wait_for_primary(&t, &hostnames, Some(&first));
    let primary_after = stopped_at.elapsed();
    assert_ne!(first, second);
    // The new primary points the VPC's return route at itself.
    let (route_after, poll) = wait_for_route(&t, &vpc, &enis[&second], Duration::from_secs(30));
    let second_index = hostnames.iter().position(|h| *h == second).expect("known");
    let shown = appliance_status(&t, second_index);
    // The appliance's own figure per table: from the netmap delta that made
    // it primary to ReplaceRoute answered.
    let mut moved_ms = Vec::new();
    for table in tables.keys() {
        let prefix = format!(
            "vpc route {table} ok: 100.64.0.0/10 -> {} (this node), moved from {} in ",
            enis[&second], enis[&first]
        );
        let figure = shown
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{shown}"));
        let ms: u64 = figure
            .strip_suffix(" ms")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a figure: {figure:?}"));
        moved_ms.push(ms);
    }
    eprintln!(
        "failover on moto: stopping the primary took {} ms; control's route list named the new primary {} ms after the stop; the new primary moved the route in each table {moved_ms:?} ms after its netmap said so (its own figure); the test saw both tables moved {} ms after the stop (one poll, an aws CLI call, takes {} ms)",
        stop_took.as_millis(),
        primary_after.as_millis(),
        (route_after - stopped_at).as_millis(),
        poll.as_millis()
    );
    // One appliance is down: the deployment is not healthy, and status
    // names it and says what is missing.
    let status = status_json(&t, 3);
    let stopped = instance_id(&status, &first);
    assert!(
        status["notes"].as_array().into_iter().flatten().any(|n| n
            .as_str()
            .is_some_and(|n| n.contains(&stopped) && n.contains("not connected to control"))),
        "{status}"
    );
    assert_eq!(
        roles(&status),
        expected_roles(&hostnames, &second, "offline"),
        "{status}"
    );
    let text = provisioner(&t, &["status"]).stdout;
    assert!(text.contains("NOT healthy"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(&instance_id(&status, &second)) && l.contains("primary")),
        "{text}"
    );

    provisioner(&t, &["destroy"]).expect_success();
    // moto runs in control's namespace, the fake IMDS in the instances',
    // which teardown checks are empty.
    drop(moto);
    drop(imds);
    t.finish();
}

/// The user data as the image's boot would use it: its state directory
/// under the test's root, and the instance's EC2 hostname (the OS hostname
/// on a real instance).
fn boot_config(user_data: &str, state_dir: &Path, hostname: &str) -> String {
    let with_dir = user_data.replace(
        "state_dir = \"/var/lib/causeway\"",
        &format!("state_dir = {:?}", state_dir.display().to_string()),
    );
    assert_ne!(with_dir, user_data, "no state_dir line in:\n{user_data}");
    let config = with_dir.replace(
        "\n[node]\n",
        &format!("\n[node]\nhostname = {hostname:?}\n"),
    );
    assert_ne!(config, with_dir, "no [node] section in:\n{user_data}");
    config
}

/// The VPC's route tables and where each sends 100.64.0.0/10 (an ENI).
fn route_tables(t: &TestDeployment, vpc: &str) -> BTreeMap<String, Option<String>> {
    let described: Value = serde_json::from_str(&aws(
        t,
        &[
            "ec2",
            "describe-route-tables",
            "--filters",
            &format!("Name=vpc-id,Values={vpc}"),
            "--output",
            "json",
        ],
    ))
    .expect("describe-route-tables is JSON");
    described["RouteTables"]
        .as_array()
        .expect("RouteTables")
        .iter()
        .map(|table| {
            let eni = table["Routes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["DestinationCidrBlock"] == "100.64.0.0/10")
                .and_then(|r| r["NetworkInterfaceId"].as_str())
                .map(str::to_owned);
            (
                table["RouteTableId"].as_str().expect("an ID").to_owned(),
                eni,
            )
        })
        .collect()
}

/// Polls moto until every route table of `vpc` sends the tailnet to
/// `eni`; returns when it first saw that, and how long that poll took.
fn wait_for_route(
    t: &TestDeployment,
    vpc: &str,
    eni: &str,
    limit: Duration,
) -> (Instant, Duration) {
    let began = Instant::now();
    loop {
        let asked = Instant::now();
        let tables = route_tables(t, vpc);
        if tables.values().all(|e| e.as_deref() == Some(eni)) {
            return (Instant::now(), asked.elapsed());
        }
        assert!(
            began.elapsed() < limit,
            "the VPC's tailnet route does not point at {eni} after {limit:?}: {tables:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `appliance status` of instance `n`, as text.
fn appliance_status(t: &TestDeployment, n: usize) -> String {
    let root = t.dep().paths().root().to_owned();
    let mut cmd = std::process::Command::new(binary("appliance"));
    cmd.arg("status")
        .arg("--state-dir")
        .arg(root.join(format!("ha{n}")));
    let out = cmd.output().expect("running appliance status");
    assert!(out.status.success(), "appliance status: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 status")
}

/// `provisioner status --output json`, which must exit with `code` (0:
/// healthy, 3: not), parsed.
fn status_json(t: &TestDeployment, code: i32) -> Value {
    let ran = provisioner(t, &["status", "--output", "json"]);
    assert_eq!(ran.status.and_then(|s| s.code()), Some(code), "{ran}");
    serde_json::from_str(&ran.stdout).unwrap_or_else(|e| panic!("status is not JSON ({e}): {ran}"))
}

/// hostname → ha_role, from a status report.
fn roles(status: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = status["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["hostname"].as_str().unwrap_or_default().to_owned(),
                i["ha_role"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// hostname → ha_role when `primary` is primary and the other is `other`.
fn expected_roles(hostnames: &[String], primary: &str, other: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = hostnames
        .iter()
        .map(|h| {
            let role = if h == primary { "primary" } else { other };
            (h.clone(), role.to_owned())
        })
        .collect();
    out.sort();
    out
}

fn instance_id(status: &Value, hostname: &str) -> String {
    status["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["hostname"] == hostname)
        .and_then(|i| i["id"].as_str())
        .unwrap_or_else(|| panic!("no instance {hostname} in {status}"))
        .to_owned()
}

/// Waits until control lists both hostnames as routers of the subnet and
/// one of them (not `not`) as its primary; returns that one.
fn wait_for_primary(t: &TestDeployment, hostnames: &[String], not: Option<&str>) -> String {
    wait_until(
        Duration::from_secs(60),
        "control to choose a primary",
        || {
            let routes = t.admin_json(&["routes", "list"]);
            let entries = routes.as_array().context("a route list")?;
            let mut primary = None;
            for h in hostnames {
                let Some(e) = entries.iter().find(|e| e["name"] == h.as_str()) else {
                    bail!("{h} has not registered: {routes}");
                };
                let approved = e["approved"].to_string();
                ensure!(
                    approved.contains(VPC_SUBNET),
                    "{h} is not approved: {routes}"
                );
                if e["primary"].to_string().contains(VPC_SUBNET) {
                    primary = Some(h.clone());
                }
            }
            match primary {
                Some(p) if Some(p.as_str()) != not => Ok(p),
                _ => bail!("no new primary yet: {routes}"),
            }
        },
    )
}
