//! Every role `deploy --cloud aws` accepts boots a config the appliance
//! accepts: the provisioner's user data for each built role goes through the
//! real `appliance check-config` (the Terraform module's goes through it in
//! terraform.rs). A role whose user data the appliance refuses fails here.

use causeway_e2e::{appliance_roles, check_config};
use causeway_provisioner::aws::spec::{self, ApplianceConfig, ConnectorData, RecorderData};
use causeway_provisioner::role::Role;

const SECRET_ARN: &str =
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:causeway/prod/ROLE-authkey-AbCdEf";
const CONTROL_PUBLIC_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// The user data `deploy` writes for `role`, as `wanted_template` fills it.
fn config(role: Role, ui: bool) -> ApplianceConfig {
    ApplianceConfig {
        role,
        control_url: "https://198.18.0.10:8080".into(),
        control_public_key: CONTROL_PUBLIC_KEY.into(),
        auth_key_secret: role
            .needs_auth_key()
            .then(|| SECRET_ARN.replace("ROLE", role.as_str())),
        secrets_manager_endpoint: None,
        state_volume: (role == Role::Control).then(|| "vol-0123456789abcdef0".into()),
        // A 4via6 router maps IPv4 ranges, with SNAT (deploy refuses
        // --no-snat and IPv6 routes with it).
        routes: if role == Role::Via6 {
            vec!["198.19.0.0/16".into(), "10.0.0.0/16".into()]
        } else {
            vec!["198.19.0.0/16".into(), "fd00:198:19::/48".into()]
        },
        site_id: (role == Role::Via6).then_some(7),
        snat: role == Role::Via6,
        aws_route_tables: if role.advertises_routes() && role != Role::Via6 {
            vec!["rtb-0123456789abcdef0".into()]
        } else {
            vec![]
        },
        recorder: (role == Role::Recorder).then(|| RecorderData {
            bucket: "causeway-prod-recordings-123456789012".into(),
            region: "eu-west-1".into(),
            allow: vec![spec::DEFAULT_RECORDER_ALLOW.into(), "198.19.4.0/24".into()],
            ui,
        }),
        egress_mac: (role == Role::ExitNode).then(|| "0a:1b:2c:3d:4e:5f".into()),
        app_connector: (role == Role::AppConnector).then(|| ConnectorData {
            domains: vec!["app.example.com".into(), "*.example.net".into()],
            max_routes: Some(5000),
            route_ttl_floor: Some(3600),
        }),
    }
}

#[test]
fn the_user_data_of_every_role_deploy_accepts_passes_appliance_check_config() {
    let roles = Role::built();
    assert_eq!(
        roles,
        [
            Role::SubnetRouter,
            Role::Via6,
            Role::ExitNode,
            Role::AppConnector,
            Role::Recorder,
            Role::Control
        ]
    );
    for role in roles {
        for ui in [false, true] {
            let text = spec::user_data(&config(role, ui))
                .unwrap_or_else(|e| panic!("role {role}: no user data: {e:#}"));
            let ran = check_config(role.as_str(), &text);
            assert!(
                ran.success(),
                "role {role} (ui {ui}): the appliance refuses its user data: {ran}\n{text}"
            );
            assert!(
                ran.stdout
                    .contains(&format!("valid; roles: {}", appliance_roles(role))),
                "role {role}: {}",
                ran.stdout
            );
        }
    }
}

#[test]
fn check_config_refuses_a_recorder_user_data_without_its_storage() {
    // The check above can fail: the same user data with the storage's kind
    // misspelt is refused, naming it.
    let text = spec::user_data(&config(Role::Recorder, false)).expect("recorder user data");
    let broken = text.replace("kind = \"s3\"", "kind = \"s4\"");
    assert_ne!(text, broken, "the user data names its storage kind");
    let ran = check_config("recorder", &broken);
    assert!(!ran.success(), "a broken recorder config passed: {ran}");
    assert!(ran.stderr.contains("s4"), "{}", ran.stderr);
}

#[test]
fn check_config_refuses_an_exit_node_with_a_misspelt_egress_key() {
    // The exit node's check above can fail: its [exit_node] section is
    // read strictly, so a misspelt egress key is refused by name.
    let text = spec::user_data(&config(Role::ExitNode, false)).expect("exit node user data");
    assert!(text.contains("egress_mac = "), "{text}");
    let broken = text.replace("egress_mac = ", "egress_macs = ");
    let ran = check_config("exit-node", &broken);
    assert!(!ran.success(), "a misspelt key passed: {ran}");
    assert!(ran.stderr.contains("egress_macs"), "{}", ran.stderr);
}

#[test]
fn check_config_refuses_an_app_connector_with_a_bad_domain_or_limit() {
    // The connector's check above can fail: the appliance reads
    // [app_connector] strictly, so a domain or a limit out of its bounds is
    // refused by name.
    let text = spec::user_data(&config(Role::AppConnector, false)).expect("connector user data");
    assert!(text.contains("\"*.example.net\""), "{text}");
    for (from, to, named) in [
        ("\"*.example.net\"", "\"*.net\"", "*.net"),
        ("max_routes = 5000", "max_routes = 70000", "max_routes"),
        (
            "route_ttl_floor = \"3600s\"",
            "route_ttl_floor = \"8d\"",
            "route_ttl_floor",
        ),
    ] {
        let broken = text.replace(from, to);
        assert_ne!(text, broken, "{from} is in the user data");
        let ran = check_config("app-connector", &broken);
        assert!(!ran.success(), "{to} passed: {ran}");
        assert!(ran.stderr.contains(named), "{to}: {}", ran.stderr);
    }
}

#[test]
fn check_config_refuses_a_via6_router_with_a_bad_site_id() {
    // The via6 check above can fail: the appliance reads site_id as a
    // 16-bit site ID, so one out of range is refused by name, and so is a
    // route listed twice at the same site.
    let text = spec::user_data(&config(Role::Via6, false)).expect("via6 user data");
    assert_eq!(text.matches(", site_id = 7 }").count(), 2, "{text}");
    let broken = text.replace("site_id = 7", "site_id = 70000");
    let ran = check_config("via6", &broken);
    assert!(!ran.success(), "site_id 70000 passed: {ran}");
    assert!(ran.stderr.contains("site_id"), "{}", ran.stderr);
    let twice = text.replace("10.0.0.0/16", "198.19.0.0/16");
    let ran = check_config("via6", &twice);
    assert!(!ran.success(), "a route twice at one site passed: {ran}");
    assert!(ran.stderr.contains("listed twice"), "{}", ran.stderr);
}

#[test]
fn no_user_data_for_a_role_the_appliance_cannot_run() {
    for role in Role::not_built() {
        let err = spec::user_data(&config(role, false)).expect_err("not built");
        assert!(
            err.to_string().contains("not built yet"),
            "role {role}: {err}"
        );
    }
}
