//! `provisioner --cloud aws` against moto in server mode (started and
//! stopped by each test, on a free port, by causeway-test-support), asserted through the AWS API
//! with the Rust SDK. Needs `moto_server` (`pip install 'moto[server]'`):
//! without it these tests fail, loudly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, Tag};
use base64::Engine;
use causeway_provisioner::aws::spec::return_route_policy;
use causeway_test_support::Moto;
use serde_json::Value;

mod common;
use common::text;

const SECRET: &str = "cwk_0123456789ab_0123456789abcdef0123456789abcdef0123456789abcdef";
const CONTROL_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

struct Clients {
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    sm: aws_sdk_secretsmanager::Client,
    s3: aws_sdk_s3::Client,
    r53: aws_sdk_route53::Client,
    r53r: aws_sdk_route53resolver::Client,
}

/// A moto with a VPC like a customer's: two public subnets in two AZs,
/// a private one, a private hosted zone, and our appliance images.
struct Cloud {
    moto: Moto,
    rt: tokio::runtime::Runtime,
    c: Clients,
    vpc: String,
    dir: tempfile::TempDir,
}

impl Cloud {
    fn new() -> Self {
        let moto = Moto::start();
        let rt = common::runtime();
        let config = common::moto_config(&rt, moto.url());
        let c = Clients {
            ec2: aws_sdk_ec2::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            sm: aws_sdk_secretsmanager::Client::new(&config),
            s3: common::s3(&config),
            r53: aws_sdk_route53::Client::new(&config),
            r53r: aws_sdk_route53resolver::Client::new(&config),
        };
        let vpc = rt.block_on(fixture(&c));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("authkey"), format!("{SECRET}\n")).expect("key file");
        Self {
            moto,
            rt,
            c,
            vpc,
            dir,
        }
    }

    fn key_file(&self) -> String {
        self.dir.path().join("authkey").display().to_string()
    }

    /// Runs the provisioner against moto.
    fn run(&self, args: &[&str]) -> Output {
        self.run_at(self.moto.url(), args)
    }

    /// Runs the provisioner against `endpoint` (moto, or a proxy in front).
    fn run_at(&self, endpoint: &str, args: &[&str]) -> Output {
        let out = common::provisioner(endpoint)
            .args(args)
            // moto runs no appliance: nothing would ever report healthy.
            // The tests that wait for health pass --health-timeout.
            .env("CAUSEWAY_HEALTH_TIMEOUT", "0")
            .output()
            .expect("provisioner runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(SECRET),
            "the auth key leaked into the provisioner's output:\n{text}"
        );
        out
    }

    fn deploy_args<'a>(&'a self, verb: &'a str, name: &'a str, role: &'a str) -> Vec<&'a str> {
        vec![
            verb,
            "--cloud",
            "aws",
            "--name",
            name,
            "--role",
            role,
            "--vpc",
            &self.vpc,
            "--control-url",
            "https://control.example.com:8080",
            "--control-public-key",
            CONTROL_KEY,
        ]
    }

    /// Starts the provisioner against moto and returns at once (a deploy
    /// that waits while the test plays the appliances), output captured.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        common::provisioner(self.moto.url())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("provisioner runs")
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "provisioner failed:\n{}", text(&out));
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", text(out)))
}

/// The report of a `plan` with changes pending (exit 3).
fn pending(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(3),
        "changes pending:\n{}",
        text(out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The security groups tagged with `deployment`, by name, with their
/// inbound rules.
async fn groups_of(c: &Clients, deployment: &str) -> BTreeMap<String, BTreeSet<String>> {
    c.ec2
        .describe_security_groups()
        .filters(filter("tag:causeway:deployment", deployment))
        .send()
        .await
        .expect("groups")
        .security_groups()
        .iter()
        .map(|g| (g.group_name().unwrap_or_default().to_owned(), ingress(g)))
        .collect()
}

/// The inline policies of IAM role `role`, by name.
async fn role_policy_names(c: &Clients, role: &str) -> Vec<String> {
    c.iam
        .list_role_policies()
        .role_name(role)
        .send()
        .await
        .expect("policies")
        .policy_names()
        .to_vec()
}

/// WireGuard from anywhere: a node's one inbound rule, as [`ingress`] lists it.
fn wireguard_only() -> BTreeSet<String> {
    BTreeSet::from([
        "udp 41641-41641 0.0.0.0/0".to_owned(),
        "udp 41641-41641 ::/0".to_owned(),
    ])
}

fn tag(k: &str, v: &str) -> Tag {
    Tag::builder().key(k).value(v).build()
}

fn filter(name: &str, value: &str) -> Filter {
    Filter::builder().name(name).values(value).build()
}

async fn fixture(c: &Clients) -> String {
    let ec2 = &c.ec2;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("vpc")
        .vpc()
        .and_then(|v| v.vpc_id())
        .expect("vpc id")
        .to_owned();
    let igw = ec2
        .create_internet_gateway()
        .send()
        .await
        .expect("igw")
        .internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .expect("igw id")
        .to_owned();
    ec2.attach_internet_gateway()
        .internet_gateway_id(&igw)
        .vpc_id(&vpc)
        .send()
        .await
        .expect("attach igw");
    let public_rt = ec2
        .create_route_table()
        .vpc_id(&vpc)
        .send()
        .await
        .expect("route table")
        .route_table()
        .and_then(|t| t.route_table_id())
        .expect("rtb id")
        .to_owned();
    ec2.create_route()
        .route_table_id(&public_rt)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(&igw)
        .send()
        .await
        .expect("default route");
    for (cidr, az, public) in [
        ("10.0.1.0/24", "us-east-1a", true),
        ("10.0.2.0/24", "us-east-1b", true),
        ("10.0.3.0/24", "us-east-1c", false),
    ] {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .availability_zone(az)
            .send()
            .await
            .expect("subnet")
            .subnet()
            .and_then(|s| s.subnet_id())
            .expect("subnet id")
            .to_owned();
        if public {
            ec2.associate_route_table()
                .route_table_id(&public_rt)
                .subnet_id(&subnet)
                .send()
                .await
                .expect("associate");
        }
    }
    for arch in ["arm64", "x86_64"] {
        let image = ec2
            .register_image()
            .name(format!("causeway-appliance-{arch}"))
            .root_device_name("/dev/xvda")
            .architecture(aws_sdk_ec2::types::ArchitectureValues::from(arch))
            .send()
            .await
            .expect("register image")
            .image_id()
            .expect("ami id")
            .to_owned();
        ec2.create_tags()
            .resources(&image)
            .tags(tag("causeway:image", "appliance"))
            .tags(tag("causeway:arch", arch))
            .send()
            .await
            .expect("tag image");
    }
    c.r53
        .create_hosted_zone()
        .name("corp.internal")
        .caller_reference("causeway-test")
        .hosted_zone_config(
            aws_sdk_route53::types::HostedZoneConfig::builder()
                .private_zone(true)
                .build(),
        )
        .vpc(
            aws_sdk_route53::types::Vpc::builder()
                .vpc_id(&vpc)
                .vpc_region(aws_sdk_route53::types::VpcRegion::UsEast1)
                .build(),
        )
        .send()
        .await
        .expect("private zone");
    vpc
}

/// Instances (any state but terminated) tagged with the deployment.
async fn instances(c: &Clients, deployment: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    c.ec2
        .describe_instances()
        .filters(filter("tag:causeway:deployment", deployment))
        .send()
        .await
        .expect("describe instances")
        .reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .collect()
}

/// Everything tagged with the deployment, as readable strings.
async fn tagged(c: &Clients, deployment: &str) -> Vec<String> {
    let mut out: Vec<String> = instances(c, deployment)
        .await
        .iter()
        .map(|i| format!("instance {}", i.instance_id().unwrap_or_default()))
        .collect();
    let sgs = c
        .ec2
        .describe_security_groups()
        .filters(filter("tag:causeway:deployment", deployment))
        .send()
        .await
        .expect("sgs");
    out.extend(
        sgs.security_groups()
            .iter()
            .map(|g| format!("sg {}", g.group_name().unwrap_or_default())),
    );
    let lts = c
        .ec2
        .describe_launch_templates()
        .filters(filter("tag:causeway:deployment", deployment))
        .send()
        .await
        .expect("lts");
    out.extend(
        lts.launch_templates()
            .iter()
            .map(|t| format!("lt {}", t.launch_template_name().unwrap_or_default())),
    );
    let secrets = c.sm.list_secrets().send().await.expect("secrets");
    for s in secrets.secret_list() {
        if s.tags()
            .iter()
            .any(|t| t.key() == Some("causeway:deployment") && t.value() == Some(deployment))
        {
            out.push(format!("secret {}", s.name().unwrap_or_default()));
        }
    }
    let roles = c.iam.list_roles().send().await.expect("roles");
    for r in roles.roles() {
        let tags = c
            .iam
            .list_role_tags()
            .role_name(r.role_name())
            .send()
            .await
            .expect("role tags");
        if tags
            .tags()
            .iter()
            .any(|t| t.key() == "causeway:deployment" && t.value() == deployment)
        {
            out.push(format!("role {}", r.role_name()));
        }
    }
    let profiles = c
        .iam
        .list_instance_profiles()
        .send()
        .await
        .expect("profiles");
    for p in profiles.instance_profiles() {
        if p.instance_profile_name()
            .starts_with(&format!("causeway-{deployment}-"))
        {
            out.push(format!("profile {}", p.instance_profile_name()));
        }
    }
    for b in c.s3.list_buckets().send().await.expect("buckets").buckets() {
        let name = b.name().unwrap_or_default();
        if let Ok(t) = c.s3.get_bucket_tagging().bucket(name).send().await
            && t.tag_set()
                .iter()
                .any(|t| t.key() == "causeway:deployment" && t.value() == deployment)
        {
            out.push(format!("bucket {name}"));
        }
    }
    let addresses = c
        .ec2
        .describe_addresses()
        .filters(filter("tag:causeway:deployment", deployment))
        .send()
        .await
        .expect("addresses");
    out.extend(
        addresses
            .addresses()
            .iter()
            .map(|a| format!("eip {}", a.allocation_id().unwrap_or_default())),
    );
    let volumes = c
        .ec2
        .describe_volumes()
        .filters(filter("tag:causeway:deployment", deployment))
        .send()
        .await
        .expect("volumes");
    out.extend(
        volumes
            .volumes()
            .iter()
            .filter(|v| v.state().map(|s| s.as_str()) != Some("deleted"))
            .map(|v| format!("volume {}", v.volume_id().unwrap_or_default())),
    );
    let enis = c
        .ec2
        .describe_network_interfaces()
        .filters(filter("tag:causeway:deployment", deployment))
        .filters(filter("tag:causeway:interface", "egress"))
        .send()
        .await
        .expect("egress interfaces");
    out.extend(enis.network_interfaces().iter().map(|n| {
        format!(
            "egress interface {}",
            n.network_interface_id().unwrap_or_default()
        )
    }));
    let eps = c
        .r53r
        .list_resolver_endpoints()
        .send()
        .await
        .expect("resolver endpoints");
    for e in eps.resolver_endpoints() {
        if e.name()
            .is_some_and(|n| n.starts_with(&format!("causeway-{deployment}-")))
        {
            out.push(format!("resolver endpoint {}", e.id().unwrap_or_default()));
        }
    }
    out
}

fn policy_doc(raw: &str) -> Value {
    let decoded = if raw.trim_start().starts_with('{') {
        raw.to_owned()
    } else {
        causeway_provisioner::aws::api::percent_decode(raw)
    };
    serde_json::from_str(&decoded).expect("policy is JSON")
}

fn ingress(g: &aws_sdk_ec2::types::SecurityGroup) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in g.ip_permissions() {
        let proto = p.ip_protocol().unwrap_or_default();
        let (from, to) = (p.from_port().unwrap_or(-1), p.to_port().unwrap_or(-1));
        for r in p.ip_ranges() {
            out.insert(format!(
                "{proto} {from}-{to} {}",
                r.cidr_ip().unwrap_or_default()
            ));
        }
        for r in p.ipv6_ranges() {
            out.insert(format!(
                "{proto} {from}-{to} {}",
                r.cidr_ipv6().unwrap_or_default()
            ));
        }
        for g in p.user_id_group_pairs() {
            out.insert(format!(
                "{proto} {from}-{to} {}",
                g.group_id().unwrap_or_default()
            ));
        }
    }
    out
}

#[test]
fn ha_subnet_router_is_hardened_converges_and_destroys_exactly_its_own() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    // Someone else's instance in the same VPC, tagged with another deployment.
    let bystander = cloud.block(async {
        let image = c
            .ec2
            .describe_images()
            .owners("self")
            .send()
            .await
            .expect("images")
            .images()[0]
            .image_id()
            .expect("id")
            .to_owned();
        let out = c
            .ec2
            .run_instances()
            .image_id(image)
            .instance_type(aws_sdk_ec2::types::InstanceType::M7gLarge)
            .min_count(1)
            .max_count(1)
            .tag_specifications(
                aws_sdk_ec2::types::TagSpecification::builder()
                    .resource_type(aws_sdk_ec2::types::ResourceType::Instance)
                    .tags(tag("causeway:deployment", "other"))
                    .build(),
            )
            .send()
            .await
            .expect("bystander");
        out.instances()[0].instance_id().expect("id").to_owned()
    });

    let key_file = cloud.key_file();
    let mut plan = cloud.deploy_args("plan", "ha1", "subnet-router");
    plan.extend(["--ha", "--auth-key-file", &key_file]);
    let planned = pending(&cloud.run(&plan));
    assert!(
        planned.contains("create    launch template causeway-ha1-subnet-router"),
        "{planned}"
    );
    assert!(
        cloud.block(tagged(c, "ha1")).is_empty(),
        "plan created something"
    );

    let mut deploy = cloud.deploy_args("deploy", "ha1", "subnet-router");
    deploy.extend(["--ha", "--auth-key-file", &key_file]);
    let started = Instant::now();
    let mut first = deploy.clone();
    first.extend(["--output", "json"]);
    let report = json(&ok(cloud.run(&first)));
    eprintln!("first deploy: {:.1} s", started.elapsed().as_secs_f64());

    assert_eq!(report["routes"], serde_json::json!(["10.0.0.0/16"]));
    assert_eq!(
        report["split_dns"]["resolvers"],
        serde_json::json!(["10.0.0.2"])
    );
    assert_eq!(report["split_dns"]["entries"][0]["domain"], "corp.internal");
    let chosen = report["sizing"]["instance_type"]
        .as_str()
        .expect("type")
        .to_owned();

    cloud.block(async {
        // Two non-burstable arm64 instances in two AZs, IMDSv2 required.
        let found = instances(c, "ha1").await;
        assert_eq!(found.len(), 2, "an HA pair");
        let azs: BTreeSet<&str> = found
            .iter()
            .filter_map(|i| i.placement().and_then(|p| p.availability_zone()))
            .collect();
        assert_eq!(azs.len(), 2, "two distinct AZs: {azs:?}");
        let names: BTreeSet<String> = found
            .iter()
            .flat_map(|i| i.tags().iter())
            .filter(|t| t.key() == Some("Name"))
            .filter_map(|t| t.value().map(str::to_owned))
            .collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "causeway-ha1-subnet-router-0".into(),
                "causeway-ha1-subnet-router-1".into()
            ])
        );
        for i in &found {
            let t = i.instance_type().expect("type").as_str();
            assert_eq!(t, chosen);
            let info = c
                .ec2
                .describe_instance_types()
                .instance_types(aws_sdk_ec2::types::InstanceType::from(t))
                .send()
                .await
                .expect("type info");
            let info = &info.instance_types()[0];
            assert_eq!(info.burstable_performance_supported(), Some(false), "{t}");
            let arches: Vec<&str> = info
                .processor_info()
                .expect("cpu")
                .supported_architectures()
                .iter()
                .map(|a| a.as_str())
                .collect();
            assert!(arches.contains(&"arm64"), "{t}: {arches:?}");
            let md = i.metadata_options().expect("metadata options");
            assert_eq!(md.http_tokens().map(|t| t.as_str()), Some("required"));
            assert_eq!(i.key_name(), None, "no key pair");
            assert_eq!(i.source_dest_check(), Some(true), "SNAT on: check stays on");
            assert!(
                i.public_ip_address().is_some(),
                "an instance in a public subnet gets a public address for direct connections"
            );
            let ud = c
                .ec2
                .describe_instance_attribute()
                .instance_id(i.instance_id().expect("id"))
                .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
                .send()
                .await
                .expect("user data");
            let ud = ud.user_data().and_then(|v| v.value()).unwrap_or_default();
            let ud = base64::engine::general_purpose::STANDARD
                .decode(ud)
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default();
            assert!(!ud.contains(SECRET), "secret in instance user data");
        }

        // The launch template: IMDSv2, encrypted gp3, no key, no secret.
        let lt = c
            .ec2
            .describe_launch_template_versions()
            .launch_template_name("causeway-ha1-subnet-router")
            .versions("$Default")
            .send()
            .await
            .expect("lt");
        let data = lt.launch_template_versions()[0]
            .launch_template_data()
            .expect("data");
        let md = data.metadata_options().expect("metadata");
        assert_eq!(md.http_tokens().map(|t| t.as_str()), Some("required"));
        assert_eq!(md.http_put_response_hop_limit(), Some(1));
        assert_eq!(md.http_endpoint().map(|t| t.as_str()), Some("enabled"));
        let ebs = data.block_device_mappings()[0].ebs().expect("ebs");
        assert_eq!(ebs.encrypted(), Some(true));
        assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
        assert_eq!(data.key_name(), None);
        let user_data = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data.user_data().expect("user data"))
                .expect("base64"),
        )
        .expect("utf-8");
        assert!(!user_data.contains(SECRET), "secret in the launch template");
        let lt_debug = format!("{lt:?}");
        assert!(!lt_debug.contains(SECRET), "secret in the launch template");

        // The secret holds the key; the user data names only its ARN.
        let secret =
            c.sm.describe_secret()
                .secret_id("causeway/ha1/subnet-router-authkey")
                .send()
                .await
                .expect("secret");
        let arn = secret.arn().expect("arn").to_owned();
        assert!(
            user_data.contains(&format!("auth_key_secret = \"{arn}\"")),
            "{user_data}"
        );
        assert!(
            user_data.contains("prefix = \"10.0.0.0/16\""),
            "{user_data}"
        );
        let value =
            c.sm.get_secret_value()
                .secret_id(&arn)
                .send()
                .await
                .expect("value");
        assert_eq!(value.secret_string(), Some(SECRET));

        // Only UDP 41641 inbound.
        let sg = c
            .ec2
            .describe_security_groups()
            .filters(filter("group-name", "causeway-ha1-subnet-router"))
            .send()
            .await
            .expect("sg");
        assert_eq!(
            ingress(&sg.security_groups()[0]),
            BTreeSet::from([
                "udp 41641-41641 0.0.0.0/0".into(),
                "udp 41641-41641 ::/0".into()
            ])
        );

        // IAM: one inline policy, GetSecretValue on that one secret.
        let role = "causeway-ha1-subnet-router";
        let policies = c
            .iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .expect("policies");
        assert_eq!(policies.policy_names(), ["causeway-auth-key"]);
        let attached = c
            .iam
            .list_attached_role_policies()
            .role_name(role)
            .send()
            .await
            .expect("attached");
        assert!(
            attached.attached_policies().is_empty(),
            "no managed policies"
        );
        let doc = c
            .iam
            .get_role_policy()
            .role_name(role)
            .policy_name("causeway-auth-key")
            .send()
            .await
            .expect("policy");
        let doc = policy_doc(doc.policy_document());
        let statements = doc["Statement"].as_array().expect("statements");
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0]["Effect"], "Allow");
        assert_eq!(statements[0]["Action"], "secretsmanager:GetSecretValue");
        assert_eq!(statements[0]["Resource"], Value::String(arn.clone()));
        let profile = c
            .iam
            .get_instance_profile()
            .instance_profile_name(role)
            .send()
            .await
            .expect("profile");
        let roles: Vec<&str> = profile
            .instance_profile()
            .expect("profile")
            .roles()
            .iter()
            .map(|r| r.role_name())
            .collect();
        assert_eq!(roles, [role]);
    });

    // Deploying again changes nothing, and says so per resource.
    let started = Instant::now();
    let again = ok(cloud.run(&deploy));
    eprintln!("second deploy: {:.1} s", started.elapsed().as_secs_f64());
    let again = String::from_utf8_lossy(&again.stdout).to_string();
    assert!(again.contains("0 create, 0 update, 0 delete"), "{again}");
    assert!(
        again.contains("unchanged security group causeway-ha1-subnet-router"),
        "{again}"
    );
    assert!(
        again.contains("unchanged launch template causeway-ha1-subnet-router"),
        "{again}"
    );
    assert!(again.contains("ok, unchanged"), "{again}");
    let out = cloud.run(&plan);
    assert_eq!(out.status.code(), Some(0), "nothing to do:\n{}", text(&out));

    // Status shows both instances, and without control's admin API it
    // cannot call them healthy: exit 3, saying why.
    let out = cloud.run(&[
        "status", "--cloud", "aws", "--name", "ha1", "--output", "json",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status = json(&out);
    assert_eq!(status["healthy"], false);
    assert!(
        status["notes"][0]
            .as_str()
            .is_some_and(|n| n.starts_with("appliance health unknown: pass --control-admin-url")),
        "{status}"
    );
    assert_eq!(status["instances"].as_array().map(Vec::len), Some(2));

    // --no-snat changes the user data, so a new template version, and the
    // instances are replaced one at a time: source/destination check off,
    // tailnet return routes to instance 0.
    let before: BTreeSet<String> = cloud.block(async {
        instances(c, "ha1")
            .await
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_owned))
            .collect()
    });
    let mut no_snat = deploy.clone();
    no_snat.push("--no-snat");
    let out = String::from_utf8_lossy(&ok(cloud.run(&no_snat)).stdout).to_string();
    assert!(out.contains("update    launch template"), "{out}");
    for n in 0..2 {
        assert!(
            out.contains(&format!(
                "update    instance causeway-ha1-subnet-router-{n}"
            )) && out.contains("default is now 2"),
            "{out}"
        );
    }
    cloud.block(async {
        let found = instances(c, "ha1").await;
        assert_eq!(found.len(), 2, "still a pair");
        for i in &found {
            let id = i.instance_id().unwrap_or_default();
            assert!(!before.contains(id), "{id} was not replaced");
            let version = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("causeway:template-version"))
                .and_then(|t| t.value());
            assert_eq!(version, Some("2"), "{id}");
        }
        assert!(found.iter().all(|i| i.source_dest_check() == Some(false)));
        let tables = c
            .ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &cloud.vpc))
            .send()
            .await
            .expect("tables");
        for t in tables.route_tables() {
            let route = t
                .routes()
                .iter()
                .find(|r| r.destination_cidr_block() == Some("100.64.0.0/10"))
                .unwrap_or_else(|| panic!("no tailnet route in {:?}", t.route_table_id()));
            assert!(
                route
                    .network_interface_id()
                    .is_some_and(|e| e.starts_with("eni-"))
            );
        }
        // The primary may point those routes at itself, in those tables
        // only.
        let mut ids: Vec<String> = tables
            .route_tables()
            .iter()
            .filter_map(|t| t.route_table_id().map(str::to_owned))
            .collect();
        ids.sort();
        let doc = c
            .iam
            .get_role_policy()
            .role_name("causeway-ha1-subnet-router")
            .policy_name("causeway-return-route")
            .send()
            .await
            .expect("the return-route policy");
        let wanted: Value =
            serde_json::from_str(&return_route_policy("us-east-1", "123456789012", &ids))
                .expect("JSON");
        assert_eq!(policy_doc(doc.policy_document()), wanted);
    });

    // Destroy removes everything tagged ha1, and only that.
    let started = Instant::now();
    ok(cloud.run(&["destroy", "--cloud", "aws", "--name", "ha1"]));
    eprintln!("destroy: {:.1} s", started.elapsed().as_secs_f64());
    cloud.block(async {
        assert_eq!(tagged(c, "ha1").await, Vec::<String>::new());
        let tables = c
            .ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &cloud.vpc))
            .send()
            .await
            .expect("tables");
        assert!(
            tables
                .route_tables()
                .iter()
                .flat_map(|t| t.routes())
                .all(|r| r.destination_cidr_block() != Some("100.64.0.0/10")),
            "tailnet routes removed"
        );
        let other = instances(c, "other").await;
        assert_eq!(other.len(), 1, "the bystander survives");
        assert_eq!(other[0].instance_id(), Some(bystander.as_str()));
    });
}

#[test]
fn recorder_bucket_is_locked_down_with_the_asked_lifecycle() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let key_file = cloud.key_file();
    let mut deploy = cloud.deploy_args("deploy", "rec1", "recorder");
    deploy.extend([
        "--ha",
        "--auth-key-file",
        &key_file,
        "--ia-days",
        "45",
        "--archive-days",
        "120",
        "--expire-days",
        "400",
        "--dns",
        "resolver-endpoint",
        "--output",
        "json",
    ]);
    let started = Instant::now();
    let report = json(&ok(cloud.run(&deploy)));
    eprintln!("recorder deploy: {:.1} s", started.elapsed().as_secs_f64());
    let bucket = "causeway-rec1-recordings-123456789012";

    // Two recorders in two AZs share the one bucket; the report names both
    // for the producer's list (their tailnet addresses need control).
    let recorders = cloud.block(instances(c, "rec1"));
    let azs: BTreeSet<&str> = recorders
        .iter()
        .filter_map(|i| i.placement().and_then(|p| p.availability_zone()))
        .collect();
    assert_eq!((recorders.len(), azs.len()), (2, 2), "{azs:?}");
    let nodes = report["recorders"]["nodes"].as_array().expect("recorders");
    assert_eq!(nodes.len(), 2, "{report}");
    assert!(
        report["recorders"]["note"]
            .as_str()
            .is_some_and(|n| n.contains("--control-admin-url")),
        "{report}"
    );
    let user_data = cloud.block(template_user_data(c, "causeway-rec1-recorder"));
    assert!(
        user_data.contains(&format!("bucket = \"{bucket}\""))
            && user_data.contains("[recorder]")
            && user_data.contains("allow = [\"100.64.0.0/10\"]"),
        "{user_data}"
    );

    cloud.block(async {
        let lc =
            c.s3.get_bucket_lifecycle_configuration()
                .bucket(bucket)
                .send()
                .await
                .expect("lifecycle");
        assert_eq!(lc.rules().len(), 1);
        let rule = &lc.rules()[0];
        assert_eq!(rule.id(), Some("causeway-recordings"));
        assert_eq!(rule.status().as_str(), "Enabled");
        let transitions: Vec<(i32, String)> = rule
            .transitions()
            .iter()
            .map(|t| {
                (
                    t.days().unwrap_or(0),
                    t.storage_class()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            transitions,
            [(45, "STANDARD_IA".to_owned()), (120, "GLACIER".to_owned())]
        );
        assert_eq!(rule.expiration().and_then(|e| e.days()), Some(400));
        assert_eq!(
            rule.abort_incomplete_multipart_upload()
                .and_then(|a| a.days_after_initiation()),
            Some(7)
        );

        let pab =
            c.s3.get_public_access_block()
                .bucket(bucket)
                .send()
                .await
                .expect("public access block");
        let pab = pab.public_access_block_configuration().expect("config");
        assert_eq!(
            (
                pab.block_public_acls(),
                pab.ignore_public_acls(),
                pab.block_public_policy(),
                pab.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true))
        );
        let enc =
            c.s3.get_bucket_encryption()
                .bucket(bucket)
                .send()
                .await
                .expect("encryption");
        let algo = enc
            .server_side_encryption_configuration()
            .and_then(|c| c.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .map(|d| d.sse_algorithm().as_str().to_owned());
        assert_eq!(algo.as_deref(), Some("AES256"));
        let policy =
            c.s3.get_bucket_policy()
                .bucket(bucket)
                .send()
                .await
                .expect("policy");
        let policy: Value = serde_json::from_str(policy.policy().expect("policy")).expect("json");
        let st = &policy["Statement"][0];
        assert_eq!(st["Effect"], "Deny");
        assert_eq!(st["Condition"]["Bool"]["aws:SecureTransport"], "false");

        // The recorder may put objects and locate the bucket, nothing more.
        let role = "causeway-rec1-recorder";
        let names = c
            .iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .expect("policies");
        let mut names = names.policy_names().to_vec();
        names.sort();
        assert_eq!(names, ["causeway-auth-key", "causeway-recordings"]);
        let doc = c
            .iam
            .get_role_policy()
            .role_name(role)
            .policy_name("causeway-recordings")
            .send()
            .await
            .expect("policy");
        let doc = policy_doc(doc.policy_document());
        let mut grants: Vec<(String, String)> = doc["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .flat_map(|s| {
                assert_eq!(s["Effect"], "Allow");
                let resource = s["Resource"].as_str().expect("one resource").to_owned();
                let actions: Vec<String> = match &s["Action"] {
                    Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().expect("action").to_owned())
                        .collect(),
                    one => vec![one.as_str().expect("action").to_owned()],
                };
                actions.into_iter().map(move |a| (a, resource.clone()))
            })
            .collect();
        grants.sort();
        assert_eq!(
            grants,
            [
                (
                    "s3:AbortMultipartUpload".to_owned(),
                    format!("arn:aws:s3:::{bucket}/*")
                ),
                (
                    "s3:GetBucketLocation".to_owned(),
                    format!("arn:aws:s3:::{bucket}")
                ),
                (
                    "s3:PutObject".to_owned(),
                    format!("arn:aws:s3:::{bucket}/*")
                ),
            ]
        );

        // Split DNS through a resolver endpoint in two AZs, DNS-only SG.
        let eps = c
            .r53r
            .list_resolver_endpoints()
            .send()
            .await
            .expect("endpoints");
        let ep = eps
            .resolver_endpoints()
            .iter()
            .find(|e| e.name() == Some("causeway-rec1-dns"))
            .expect("resolver endpoint");
        assert_eq!(ep.direction().map(|d| d.as_str()), Some("INBOUND"));
        let ips = c
            .r53r
            .list_resolver_endpoint_ip_addresses()
            .resolver_endpoint_id(ep.id().expect("id"))
            .send()
            .await
            .expect("ips");
        assert_eq!(ips.ip_addresses().len(), 2);
        let subnets: BTreeSet<&str> = ips
            .ip_addresses()
            .iter()
            .filter_map(|a| a.subnet_id())
            .collect();
        assert_eq!(subnets.len(), 2, "two subnets (two AZs)");
        let sg = c
            .ec2
            .describe_security_groups()
            .filters(filter("group-name", "causeway-rec1-dns"))
            .send()
            .await
            .expect("dns sg");
        assert_eq!(
            ingress(&sg.security_groups()[0]),
            BTreeSet::from([
                "tcp 53-53 10.0.0.0/16".into(),
                "tcp 53-53 100.64.0.0/10".into(),
                "udp 53-53 10.0.0.0/16".into(),
                "udp 53-53 100.64.0.0/10".into(),
            ])
        );
    });
    let resolvers = report["split_dns"]["resolvers"]
        .as_array()
        .expect("resolvers");
    assert_eq!(resolvers.len(), 2, "{report}");
    assert_eq!(
        report["split_dns"]["entries"][0]["nameservers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Converged: a second run changes nothing.
    let again = json(&ok(cloud.run(&deploy)));
    let changed: Vec<&Value> = again["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["change"] != "unchanged")
        .collect();
    assert!(changed.is_empty(), "second deploy changed {changed:?}");

    // The TLS-only policy bites: moto refuses a plain-HTTP upload.
    // Then, without the policy, a bucket holding recordings stops destroy
    // unless asked.
    cloud.block(async {
        let put = || {
            c.s3.put_object()
                .bucket(bucket)
                .key("2026/session.cast")
                .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
                .send()
        };
        let refused = put()
            .await
            .expect_err("plain HTTP is denied by the bucket policy");
        assert_eq!(
            refused.raw_response().map(|r| r.status().as_u16()),
            Some(403)
        );
        c.s3.delete_bucket_policy()
            .bucket(bucket)
            .send()
            .await
            .expect("delete policy");
        put().await.expect("put over HTTP without the policy");
    });
    let out = cloud.run(&["destroy", "--cloud", "aws", "--name", "rec1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--delete-recordings"), "{}", text(&out));
    ok(cloud.run(&[
        "destroy",
        "--cloud",
        "aws",
        "--name",
        "rec1",
        "--delete-recordings",
    ]));
    assert_eq!(cloud.block(tagged(c, "rec1")), Vec::<String>::new());
}

#[test]
fn impossible_requests_are_refused_before_anything_is_created() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let key_file = cloud.key_file();
    let refuse = |extra: &[&str], expect: &str| {
        let mut args = cloud.deploy_args("deploy", "bad1", "subnet-router");
        args.extend(["--auth-key-file", &key_file]);
        args.extend(extra);
        let out = cloud.run(&args);
        assert!(!out.status.success(), "{extra:?} must be refused");
        let t = text(&out);
        assert!(t.contains(expect), "{extra:?}: expected {expect:?} in\n{t}");
        assert!(
            t.contains("refused before creating anything") || expect == "--role",
            "{t}"
        );
    };
    refuse(&["--instance-type", "t4g.medium"], "--allow-burstable");
    refuse(&["--instance-type", "c7i.xlarge"], "the image is arm64");
    refuse(
        &["--instance-type", "x9.nonsense"],
        "--instance-type x9.nonsense",
    );
    refuse(&["--ami", "ami-12345678"], "--ami ami-12345678");

    // A type in the catalogue but not offered in one of the AZs.
    let missing = cloud.block(async {
        let offered = |az: &'static str| async move {
            c.ec2
                .describe_instance_type_offerings()
                .location_type(aws_sdk_ec2::types::LocationType::AvailabilityZone)
                .filters(filter("location", az))
                .send()
                .await
                .expect("offerings")
                .instance_type_offerings()
                .iter()
                .filter_map(|o| o.instance_type().map(|t| t.as_str().to_owned()))
                .collect::<BTreeSet<String>>()
        };
        let (a, b) = (offered("us-east-1a").await, offered("us-east-1b").await);
        let types = c
            .ec2
            .describe_instance_types()
            .filters(filter("processor-info.supported-architecture", "arm64"))
            .filters(filter("burstable-performance-supported", "false"))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .expect("catalogue");
        types
            .iter()
            .filter_map(|t| t.instance_type().map(|t| t.as_str().to_owned()))
            .find(|t| !a.contains(t) || !b.contains(t))
            .expect("moto's catalogue has an arm64 type not offered in us-east-1a or us-east-1b")
    });
    refuse(
        &["--ha", "--instance-type", &missing],
        "is not offered in availability zone",
    );

    // An unknown role is refused by the parser, naming the flag.
    let out = cloud.run(&[
        "deploy", "--cloud", "aws", "--name", "bad1", "--role", "gateway", "--vpc", &cloud.vpc,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--role"), "{}", text(&out));

    // A role the appliance cannot run yet is refused by plan and deploy.
    for verb in ["plan", "deploy"] {
        let mut args = cloud.deploy_args(verb, "bad1", "relay");
        args.extend(["--auth-key-file", &key_file]);
        let out = cloud.run(&args);
        assert!(!out.status.success(), "{verb} --role relay must be refused");
        assert!(
            text(&out).contains("--role relay is not built yet"),
            "{}",
            text(&out)
        );
    }

    // Nothing was created by any of them.
    assert_eq!(cloud.block(tagged(c, "bad1")), Vec::<String>::new());
    let names: Vec<String> = cloud.block(async {
        c.ec2
            .describe_security_groups()
            .send()
            .await
            .expect("sgs")
            .security_groups()
            .iter()
            .filter_map(|g| g.group_name().map(str::to_owned))
            .filter(|n| n.starts_with("causeway-"))
            .collect()
    });
    assert!(names.is_empty(), "{names:?}");
    let _ = Path::new(&key_file);
}

/// A deploy that fails half-way names the resource and AWS's error code,
/// keeps what it created, and the next deploy resumes from there. The
/// failure is injected by a proxy in front of moto that answers
/// `CreateLaunchTemplate` the way EC2 answers a caller without permission.
#[test]
fn a_deploy_that_fails_half_way_names_the_resource_and_resumes() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let key_file = cloud.key_file();
    let proxy = FaultProxy::start(cloud.moto.url(), "Action=CreateLaunchTemplate");
    let mut args = cloud.deploy_args("deploy", "half1", "subnet-router");
    args.extend(["--auth-key-file", &key_file]);

    let out = cloud.run_at(&proxy.url, &args);

    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("launch template causeway-half1-subnet-router")
            && said.contains("AWS error UnauthorizedOperation"),
        "the error names the resource and AWS's code:\n{said}"
    );
    assert!(said.contains("the next deploy resumes"), "{said}");
    let before = cloud.block(tagged(c, "half1"));
    for kind in ["secret ", "role ", "sg "] {
        assert!(
            before.iter().any(|r| r.starts_with(kind)),
            "what was created before the failure stays ({kind}): {before:?}"
        );
    }
    assert!(cloud.block(instances(c, "half1")).is_empty());

    // Permission granted: the next deploy picks up where it stopped.
    let out = ok(cloud.run(&args));

    let said = String::from_utf8_lossy(&out.stdout).to_string();
    for kept in [
        "secret causeway/half1/subnet-router-authkey",
        "IAM role causeway-half1-subnet-router",
        "security group causeway-half1-subnet-router",
    ] {
        assert!(
            said.contains(&format!("unchanged {kept}")),
            "{kept} is reused, not created again:\n{said}"
        );
    }
    assert!(
        said.contains("create    launch template causeway-half1-subnet-router"),
        "{said}"
    );
    assert_eq!(cloud.block(instances(c, "half1")).len(), 1);
    let after = cloud.block(tagged(c, "half1"));
    for r in &before {
        assert!(after.contains(r), "{r} was replaced: {after:?}");
    }
}

/// A resource with the deployment's name that the deployment does not own
/// (no `causeway:deployment` tag) is refused, not taken over.
#[test]
fn a_launch_template_of_someone_else_is_not_taken_over() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let key_file = cloud.key_file();
    let template = "causeway-squat1-subnet-router";
    cloud.block(async {
        c.ec2
            .create_launch_template()
            .launch_template_name(template)
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                    .build(),
            )
            .send()
            .await
            .expect("the other launch template")
    });
    let mut args = cloud.deploy_args("deploy", "squat1", "subnet-router");
    args.extend(["--auth-key-file", &key_file]);

    let out = cloud.run(&args);

    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "launch template {template} exists but is not tagged causeway:deployment=squat1; refusing to take it over"
        )),
        "{}",
        text(&out)
    );
    let versions = cloud.block(async {
        c.ec2
            .describe_launch_template_versions()
            .launch_template_name(template)
            .send()
            .await
            .expect("versions")
            .launch_template_versions()
            .len()
    });
    assert_eq!(versions, 1, "the other launch template was changed");
}

/// An HTTP proxy in front of moto that answers requests whose body holds
/// `fail_on` with EC2's `UnauthorizedOperation` and forwards the rest.
/// Runs on its own runtime; stopped on drop.
struct FaultProxy {
    url: String,
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    fn start(upstream: &str, fail_on: &'static str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let upstream = upstream.to_owned();
        let url = rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let client = reqwest::Client::new();
            let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                let (client, upstream) = (client.clone(), upstream.clone());
                async move { forward(client, &upstream, fail_on, req).await }
            });
            tokio::spawn(async move { axum::serve(listener, app).await });
            url
        });
        Self { url, _rt: rt }
    }
}

async fn forward(
    client: reqwest::Client,
    upstream: &str,
    fail_on: &str,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .expect("request body");
    if String::from_utf8_lossy(&body).contains(fail_on) {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>";
        return (axum::http::StatusCode::FORBIDDEN, xml).into_response();
    }
    let mut up = client.request(
        parts.method.clone(),
        format!(
            "{upstream}{}",
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        ),
    );
    for (k, v) in &parts.headers {
        if k != axum::http::header::HOST {
            up = up.header(k, v);
        }
    }
    let answer = up.body(body).send().await.expect("moto answers");
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.expect("moto's body");
    let mut out = (status, bytes).into_response();
    for (k, v) in &headers {
        if k != axum::http::header::CONTENT_LENGTH && k != axum::http::header::TRANSFER_ENCODING {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}

/// A real control server, in this process on its own runtime, whose admin
/// API the provisioner calls. Stopped on drop.
struct LiveControl {
    rt: tokio::runtime::Runtime,
    url: String,
    /// Where nodes dial in.
    node_addr: std::net::SocketAddr,
    /// The key nodes pin.
    public_key: causeway_wire::PublicKey,
    token_file: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl LiveControl {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (url, node_addr) = rt.block_on(async {
            let node = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let admin = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let mut config = causeway_control::ControlConfig::new(dir.path());
            config.listen = node.local_addr().expect("addr");
            let node_addr = config.listen;
            config.admin_listen = admin.local_addr().expect("addr");
            let url = format!("http://{}", config.admin_listen);
            tokio::spawn(causeway_control::serve_on(
                config,
                causeway_control::Listeners {
                    node,
                    admin,
                    stun: None,
                },
                async move {
                    let _ = stopped.await;
                },
            ));
            let health = format!("{url}/healthz");
            for _ in 0..100 {
                if reqwest::get(&health)
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return (url, node_addr);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("control did not answer {health}");
        });
        let public_key = std::fs::read_to_string(dir.path().join("control.pub"))
            .expect("control.pub")
            .trim()
            .parse()
            .expect("control's public key");
        Self {
            rt,
            url,
            node_addr,
            public_key,
            token_file: dir.path().join("admin.token"),
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn admin_args(&self) -> [String; 4] {
        [
            "--control-admin-url".into(),
            self.url.clone(),
            "--control-admin-token-file".into(),
            self.token_file.display().to_string(),
        ]
    }

    fn get(&self, path: &str) -> Value {
        let token = std::fs::read_to_string(&self.token_file).expect("admin token");
        self.rt.block_on(async {
            reqwest::Client::new()
                .get(format!("{}{path}", self.url))
                .bearer_auth(token.trim())
                .send()
                .await
                .expect("admin API answers")
                .json()
                .await
                .expect("JSON")
        })
    }
}

impl LiveControl {
    /// `PUT /api/v1/policy`.
    fn put_policy(&self, text: &str) {
        let token = std::fs::read_to_string(&self.token_file).expect("admin token");
        let status = self.rt.block_on(async {
            reqwest::Client::new()
                .put(format!("{}/api/v1/policy", self.url))
                .bearer_auth(token.trim())
                .body(text.to_owned())
                .send()
                .await
                .expect("admin API answers")
                .status()
        });
        assert!(status.is_success(), "policy refused: {status}");
    }

    /// Joins as the appliance of the instance with host name `hostname`
    /// would: registers with `auth_key` and holds its netmap stream,
    /// advertising `routes` (a prefix, or `site:N:CIDR` for a 4via6 route), on control's runtime (so it stays online
    /// while the test waits for a provisioner run). Control's refusal, in
    /// its words.
    fn appliance_joins(
        &self,
        auth_key: &str,
        hostname: &str,
        routes: &[&str],
    ) -> Result<(), String> {
        let routes = routes.iter().map(|r| (*r).to_owned()).collect();
        self.rt.block_on(appliance::join(
            self.node_addr,
            self.public_key,
            auth_key.to_owned(),
            hostname.to_owned(),
            routes,
        ))
    }
}

/// An appliance reduced to what control sees of it: the control channel
/// (docs/reference/control-protocol.md), registration and the netmap
/// stream, held open by a task that reads until control closes it.
mod appliance {
    use std::hash::BuildHasher;
    use std::net::SocketAddr;

    use base64::Engine;
    use causeway_wire::noise::{Initiator, Opener};
    use causeway_wire::{
        CONTROL_PATH, ClientHello, ClientMessage, HANDSHAKE_HEADER, MIN_CAPABILITY_VERSION,
        MapRequest, PrivateKey, PublicKey, RegisterRequest, ServerHello, ServerMessage,
        UPGRADE_PROTOCOL,
    };
    use ipnet::IpNet;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A fresh key (the test needs no reproducible keys, only distinct ones).
    fn fresh_key() -> PrivateKey {
        let seed = std::collections::hash_map::RandomState::new();
        let mut bytes = [0u8; 32];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&seed.hash_one(i).to_le_bytes());
        }
        PrivateKey::from_random_bytes(bytes)
    }

    async fn next(stream: &mut TcpStream, opener: &mut Opener) -> Option<ServerMessage> {
        loop {
            if let Some(msg) = opener.next_message().expect("a valid record") {
                return Some(msg);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            opener.push(&chunk[..n]);
        }
    }

    pub async fn join(
        control: SocketAddr,
        control_key: PublicKey,
        auth_key: String,
        hostname: String,
        routes: Vec<String>,
    ) -> Result<(), String> {
        // The oldest version control serves: such a node sends no
        // keepalives and control sets no read deadline on it, so this
        // stand-in stays online for as long as it reads its stream.
        let hello = ClientHello {
            capability_version: MIN_CAPABILITY_VERSION,
        };
        let (initiator, msg1) =
            Initiator::start(&fresh_key(), &control_key, &hello).expect("first message");
        let mut stream = TcpStream::connect(control).await.expect("control listens");
        let request = format!(
            "POST {CONTROL_PATH} HTTP/1.1\r\nHost: control\r\nUpgrade: {UPGRADE_PROTOCOL}\r\nConnection: upgrade\r\n{HANDSHAKE_HEADER}: {}\r\nContent-Length: 0\r\n\r\n",
            base64::engine::general_purpose::STANDARD.encode(&msg1)
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("upgrade sent");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            let n = stream.read(&mut chunk).await.expect("upgrade answer");
            assert!(n > 0, "control closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut rest = buf[head_end..].to_vec();
        while rest.len() < 2 || rest.len() < 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]))
        {
            let n = stream.read(&mut chunk).await.expect("second message");
            assert!(n > 0, "control closed before the second message");
            rest.extend_from_slice(&chunk[..n]);
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let (server_hello, channel) = initiator.finish(&rest[2..2 + len]).expect("handshake");
        assert!(
            !matches!(server_hello, ServerHello::Refused { .. }),
            "{server_hello:?}"
        );
        let (mut sealer, mut opener) = channel.split();
        opener.push(&rest[2 + len..]);

        let node_key = fresh_key().public_key();
        let mut out = Vec::new();
        let register = ClientMessage::Register(RegisterRequest {
            node_key,
            old_node_key: None,
            auth_key: Some(auth_key),
            hostname: hostname.clone(),
        });
        sealer.seal(&register, &mut out).expect("sealed");
        stream.write_all(&out).await.expect("sent");
        let addresses = match next(&mut stream, &mut opener).await {
            Some(ServerMessage::Registered(r)) => r.addresses,
            Some(ServerMessage::Error(e)) => return Err(e.message),
            other => panic!("unexpected answer to register: {other:?}"),
        };
        // A 4via6 route `site:N:CIDR` is advertised as the appliance
        // advertises it: the site's IPv6 route in the tailnet's /48, which
        // only the node's own address tells.
        let ula = addresses.iter().find_map(|a| match a {
            IpNet::V6(v6) => Some(causeway_wire::via6::tailnet_ula(v6.addr())),
            IpNet::V4(_) => None,
        });
        let routes: Vec<IpNet> = routes
            .iter()
            .map(
                |r| match r.strip_prefix("site:").and_then(|x| x.split_once(':')) {
                    Some((site, range)) => IpNet::V6(causeway_wire::via6::via6_prefix(
                        ula.expect("an IPv6 address"),
                        site.parse().expect("site ID"),
                        range.parse().expect("IPv4 range"),
                    )),
                    None => r.parse().expect("prefix"),
                },
            )
            .collect();
        out.clear();
        let map = ClientMessage::Map(MapRequest {
            node_key,
            hostname,
            endpoints: Vec::new(),
            advertised_routes: routes,
            health: None,
            priority: None,
            app_connector: None,
        });
        sealer.seal(&map, &mut out).expect("sealed");
        stream.write_all(&out).await.expect("sent");
        match next(&mut stream, &mut opener).await {
            Some(ServerMessage::Map(_)) => {}
            other => panic!("unexpected answer to map: {other:?}"),
        }
        // Online for as long as the stream is read.
        tokio::spawn(async move { while next(&mut stream, &mut opener).await.is_some() {} });
        Ok(())
    }
}

impl Drop for LiveControl {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[test]
fn control_mints_the_key_and_gets_the_split_dns_entries() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let control = LiveControl::start();
    let admin = control.admin_args();
    let mut deploy = cloud.deploy_args("deploy", "lc1", "subnet-router");
    deploy.extend(admin.iter().map(String::as_str));
    let mut first = deploy.clone();
    first.extend(["--output", "json"]);

    let out = ok(cloud.run(&first));

    let report = json(&out);
    assert_eq!(
        report["split_dns"]["registered_in_control"], true,
        "{report}"
    );
    let resolver = serde_json::json!(["10.0.0.2"]);
    assert_eq!(
        control.get("/api/v1/dns/split"),
        serde_json::json!({"corp.internal": resolver, "ec2.internal": resolver}),
        "the VPC's private zone and its instance names resolve through the VPC resolver"
    );
    let keys = control.get("/api/v1/keys");
    let keys = keys.as_array().expect("key list");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["reusable"], true);
    assert_eq!(keys[0]["tags"], serde_json::json!(["tag:subnet-router"]));
    let lifetime = keys[0]["expires"].as_i64().expect("an expiry")
        - keys[0]["created"].as_i64().expect("created");
    assert_eq!(lifetime, 3600, "the default --auth-key-expiry");
    let minted = secret_value(&cloud, "causeway/lc1/subnet-router-authkey");
    let key_id = keys[0]["id"].as_str().expect("key id");
    assert!(
        minted.contains(key_id),
        "the stored key is the one control minted"
    );
    assert!(
        !text(&out).contains(&minted),
        "the minted key leaked into the provisioner's output"
    );

    // Deploying again mints nothing and registers nothing.
    let again = String::from_utf8_lossy(&ok(cloud.run(&deploy)).stdout).to_string();
    assert!(again.contains("0 create, 0 update, 0 delete"), "{again}");
    assert!(
        again.contains("unchanged split-DNS entry in control corp.internal"),
        "{again}"
    );
    assert_eq!(
        control.get("/api/v1/keys").as_array().map(Vec::len),
        Some(1)
    );

    // Status asks control: the instance has not joined (moto runs nothing),
    // so the deployment is not healthy, whatever EC2 says.
    let mut status = vec![
        "status", "--cloud", "aws", "--name", "lc1", "--output", "json",
    ];
    status.extend(admin.iter().map(String::as_str));
    let out = cloud.run(&status);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let status = json(&out);
    assert_eq!(
        status["instances"][0]["ha_role"], "not registered",
        "{status}"
    );
    assert_eq!(
        status["instances"][0]["appliance"]["missing"][0], "not registered with control",
        "{status}"
    );

    // deploy waits for the appliance's health and, when it does not come,
    // exits 3 naming the instance and what is missing.
    let mut wait = deploy.clone();
    wait.extend(["--health-timeout", "3"]);
    let out = cloud.run(&wait);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let id = status["instances"][0]["id"]
        .as_str()
        .expect("an instance id");
    assert!(
        text(&out).contains(&format!("{id}: not registered with control")),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("appliance NOT healthy: not registered with control"),
        "{}",
        text(&out)
    );

    // Without the admin API there is no one to ask: deploy refuses to wait
    // blind, before touching anything.
    let key_file = cloud.key_file();
    let mut blind = cloud.deploy_args("deploy", "lc2", "subnet-router");
    blind.extend(["--auth-key-file", &key_file, "--health-timeout", "60"]);
    let out = cloud.run(&blind);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("only control's admin API can tell")
            && text(&out).contains("--health-timeout 0"),
        "{}",
        text(&out)
    );
    assert_eq!(cloud.block(tagged(c, "lc2")), Vec::<String>::new());

    // Role control opens its TCP port to nodes, not the WireGuard port.
    ok(cloud.run(&[
        "deploy", "--cloud", "aws", "--name", "ctl1", "--role", "control", "--vpc", &cloud.vpc,
    ]));
    cloud.block(async {
        let groups = c
            .ec2
            .describe_security_groups()
            .filters(filter("group-name", "causeway-ctl1-control"))
            .send()
            .await
            .expect("sgs");
        let group = groups.security_groups().first().expect("control's group");
        assert_eq!(
            ingress(group),
            BTreeSet::from([
                "tcp 8080-8080 0.0.0.0/0".into(),
                "tcp 8080-8080 ::/0".into()
            ])
        );
    });
}

/// The appliances of deployment `name`'s instances join as they would on
/// boot: once `count` instances exist, each registers with the key its
/// role reads from the secret, under the instance's host name, advertising
/// `routes`.
fn instances_join(
    cloud: &Cloud,
    control: &LiveControl,
    (name, role): (&str, &str),
    count: usize,
    routes: &[&str],
) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let hostnames = loop {
        let found = cloud.block(instances(&cloud.c, name));
        let names: Vec<String> = found
            .iter()
            .filter_map(|i| i.private_dns_name())
            .filter_map(|d| d.split('.').next())
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if names.len() == count {
            break names;
        }
        assert!(Instant::now() < deadline, "the deploy launched {names:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let key = secret_value(cloud, &format!("causeway/{name}/{role}-authkey"));
    for hostname in &hostnames {
        control
            .appliance_joins(&key, hostname, routes)
            .unwrap_or_else(|e| panic!("{hostname} could not join: {e}"));
    }
    key
}

fn secret_value(cloud: &Cloud, name: &str) -> String {
    cloud.block(async {
        cloud
            .c
            .sm
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .expect("the secret")
            .secret_string()
            .expect("a string secret")
            .to_owned()
    })
}

#[test]
fn minted_keys_expire_are_retired_once_the_pair_joins_and_a_relaunch_mints_anew() {
    let cloud = Cloud::new();
    let control = LiveControl::start();
    // The operator's policy approves the routers' routes.
    control.put_policy(r#"{"autoApprovers": {"routes": {"10.0.0.0/16": ["tag:subnet-router"]}}}"#);
    let admin = control.admin_args();
    let mut deploy = cloud.deploy_args("deploy", "ret1", "subnet-router");
    deploy.extend(["--ha", "--auth-key-expiry", "1800"]);
    deploy.extend(admin.iter().map(String::as_str));
    let mut until_healthy = deploy.clone();
    until_healthy.extend(["--health-timeout", "120"]);

    let started = Instant::now();
    let run = cloud.spawn(&until_healthy);
    let minted = instances_join(
        &cloud,
        &control,
        ("ret1", "subnet-router"),
        2,
        &["10.0.0.0/16"],
    );
    let out = ok(run.wait_with_output().expect("provisioner ends"));
    eprintln!(
        "healthy HA deploy with retirement: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        !text(&out).contains(&minted),
        "the key leaked:\n{}",
        text(&out)
    );

    // The key had a lifetime, and is revoked now that both joined.
    let keys = control.get("/api/v1/keys");
    let keys = keys.as_array().expect("key list");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let key = &keys[0];
    let lifetime =
        key["expires"].as_i64().expect("an expiry") - key["created"].as_i64().expect("created");
    assert_eq!(lifetime, 1800, "{key}");
    assert_eq!(
        (&key["revoked"], &key["usable"]),
        (&Value::Bool(true), &Value::Bool(false)),
        "{key}"
    );
    let id = key["id"].as_str().expect("id");
    assert!(
        minted.contains(id),
        "the pair joined with the key deploy minted"
    );
    assert!(
        text(&out).contains(&format!(
            "auth key {id} revoked in control and cleared from the secret"
        )),
        "{}",
        text(&out)
    );
    // The secret holds no key any more; neither it nor the old key joins.
    let held = secret_value(&cloud, "causeway/ret1/subnet-router-authkey");
    assert!(held.starts_with("retired:") && !held.contains(id), "{held}");
    let refused = control
        .appliance_joins(&held, "intruder", &[])
        .expect_err("no key");
    assert!(refused.contains("not known"), "{refused}");
    let refused = control
        .appliance_joins(&minted, "intruder", &[])
        .expect_err("revoked");
    assert!(refused.contains("revoked"), "{refused}");
    // The joined routers stay online: they need no auth key again.
    let nodes = control.get("/api/v1/nodes");
    assert_eq!(
        nodes
            .as_array()
            .expect("nodes")
            .iter()
            .filter(|n| n["online"] == true)
            .count(),
        2,
        "{nodes}"
    );

    // Deploying again launches nothing, so it mints nothing.
    let again = String::from_utf8_lossy(&ok(cloud.run(&deploy)).stdout).to_string();
    assert!(again.contains("0 create, 0 update, 0 delete"), "{again}");
    assert_eq!(
        control.get("/api/v1/keys").as_array().map(Vec::len),
        Some(1)
    );

    // An instance lost: the deploy that relaunches it mints a new key first.
    let lost = cloud.block(instances(&cloud.c, "ret1"))[0]
        .instance_id()
        .expect("id")
        .to_owned();
    cloud.block(async {
        cloud
            .c
            .ec2
            .terminate_instances()
            .instance_ids(&lost)
            .send()
            .await
            .expect("terminated")
    });
    let relaunch = String::from_utf8_lossy(&ok(cloud.run(&deploy)).stdout).to_string();
    assert!(relaunch.contains("new auth key minted for the instances launched (expires in 1800 s); the old value was retired"), "{relaunch}");
    let keys = control.get("/api/v1/keys");
    let fresh: Vec<&Value> = keys
        .as_array()
        .expect("key list")
        .iter()
        .filter(|k| k["usable"] == true)
        .collect();
    assert_eq!(fresh.len(), 1, "{keys}");
    let fresh_id = fresh[0]["id"].as_str().expect("id");
    let held = secret_value(&cloud, "causeway/ret1/subnet-router-authkey");
    assert!(held.contains(fresh_id), "the secret holds the new key");
    control
        .appliance_joins(&held, "replacement", &[])
        .expect("a relaunched instance joins with it");
}

/// Control's Elastic IP and state volume, read through the API.
async fn control_state(
    c: &Clients,
    deployment: &str,
) -> (aws_sdk_ec2::types::Address, aws_sdk_ec2::types::Volume) {
    let addresses = c
        .ec2
        .describe_addresses()
        .filters(filter("tag:causeway:deployment", deployment))
        .send()
        .await
        .expect("addresses");
    assert_eq!(addresses.addresses().len(), 1, "{addresses:?}");
    let volumes = c
        .ec2
        .describe_volumes()
        .filters(filter(
            "tag:Name",
            &format!("causeway-{deployment}-control-state"),
        ))
        .send()
        .await
        .expect("volumes");
    assert_eq!(volumes.volumes().len(), 1, "{volumes:?}");
    (
        addresses.addresses()[0].clone(),
        volumes.volumes()[0].clone(),
    )
}

#[test]
fn control_keeps_its_elastic_ip_and_state_volume_across_replacement() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let deploy = |extra: &[&str]| {
        let mut args = vec![
            "deploy", "--cloud", "aws", "--name", "ctl2", "--role", "control", "--vpc", &cloud.vpc,
        ];
        args.extend(extra);
        cloud.run(&args)
    };
    let report = json(&ok(deploy(&["--output", "json"])));

    let first = cloud.block(instances(c, "ctl2"));
    assert_eq!(first.len(), 1, "one control instance");
    let first_id = first[0].instance_id().expect("id").to_owned();
    let first_az = first[0]
        .placement()
        .and_then(|p| p.availability_zone())
        .expect("az")
        .to_owned();
    let (address, volume) = cloud.block(control_state(c, "ctl2"));
    let public_ip = address.public_ip().expect("public ip").to_owned();
    let allocation = address.allocation_id().expect("allocation").to_owned();
    let volume_id = volume.volume_id().expect("volume id").to_owned();
    assert_eq!(
        address.instance_id(),
        Some(first_id.as_str()),
        "{address:?}"
    );
    let tags: BTreeSet<(String, String)> = address
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        tags.contains(&("causeway:deployment".into(), "ctl2".into()))
            && tags.contains(&("causeway:role".into(), "control".into())),
        "{tags:?}"
    );
    assert_eq!(volume.encrypted(), Some(true));
    assert_eq!(volume.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(volume.size(), Some(8));
    assert_eq!(volume.availability_zone(), Some(first_az.as_str()));
    let attached: Vec<(&str, &str)> = volume
        .attachments()
        .iter()
        .map(|a| {
            (
                a.instance_id().unwrap_or_default(),
                a.device().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(attached, [(first_id.as_str(), "/dev/sdf")]);
    assert_eq!(
        report["instances"][0]["public_ip"].as_str(),
        Some(public_ip.as_str()),
        "the report shows control at its Elastic IP: {report}"
    );
    let user_data = cloud.block(template_user_data(c, "causeway-ctl2-control"));
    assert!(
        user_data.contains(&format!(
            "state_dir = \"/var/lib/causeway\"\nstate_volume = \"{volume_id}\""
        )),
        "the user data names the state volume for the image to mount: {user_data}"
    );

    // Converged: nothing to do.
    let again = String::from_utf8_lossy(&ok(deploy(&[])).stdout).to_string();
    assert!(again.contains("0 create, 0 update, 0 delete"), "{again}");

    // A template change replaces the instance: the replacement gets the
    // same address and the same volume.
    let replaced =
        String::from_utf8_lossy(&ok(deploy(&["--root-volume-size", "9"])).stdout).to_string();
    let second = cloud.block(instances(c, "ctl2"));
    let running: Vec<&aws_sdk_ec2::types::Instance> = second
        .iter()
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("running"))
        .collect();
    assert_eq!(running.len(), 1, "{second:?}");
    let second_id = running[0].instance_id().expect("id").to_owned();
    assert_ne!(second_id, first_id, "the instance was replaced: {replaced}");
    let (address, volume) = cloud.block(control_state(c, "ctl2"));
    assert_eq!(address.allocation_id(), Some(allocation.as_str()));
    assert_eq!(address.public_ip(), Some(public_ip.as_str()));
    assert_eq!(
        address.instance_id(),
        Some(second_id.as_str()),
        "{replaced}"
    );
    assert_eq!(volume.volume_id(), Some(volume_id.as_str()));
    let attached: Vec<(&str, &str)> = volume
        .attachments()
        .iter()
        .filter(|a| a.state().map(|s| s.as_str()) == Some("attached"))
        .map(|a| {
            (
                a.instance_id().unwrap_or_default(),
                a.device().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(attached, [(second_id.as_str(), "/dev/sdf")], "{replaced}");
    let settled =
        String::from_utf8_lossy(&ok(deploy(&["--root-volume-size", "9"])).stdout).to_string();
    assert!(
        settled.contains("0 create, 0 update, 0 delete"),
        "{settled}"
    );

    // Only destroy removes them.
    ok(cloud.run(&["destroy", "--cloud", "aws", "--name", "ctl2"]));
    assert_eq!(cloud.block(tagged(c, "ctl2")), Vec::<String>::new());
    cloud.block(async {
        let gone = c
            .ec2
            .describe_addresses()
            .allocation_ids(&allocation)
            .send()
            .await;
        assert!(
            gone.as_ref().map_or(true, |o| o.addresses().is_empty()),
            "the Elastic IP was released: {gone:?}"
        );
        let gone = c.ec2.describe_volumes().volume_ids(&volume_id).send().await;
        assert!(
            gone.as_ref().map_or(true, |o| o
                .volumes()
                .iter()
                .all(|v| v.state().map(|s| s.as_str()) == Some("deleted"))),
            "the state volume was deleted: {gone:?}"
        );
    });
}

/// The user data of launch template `name`'s default version, decoded.
async fn template_user_data(c: &Clients, name: &str) -> String {
    let v = c
        .ec2
        .describe_launch_template_versions()
        .launch_template_name(name)
        .versions("$Default")
        .send()
        .await
        .expect("template");
    let data = v.launch_template_versions()[0]
        .launch_template_data()
        .and_then(|d| d.user_data())
        .expect("user data")
        .to_owned();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64"),
    )
    .expect("utf-8")
}

/// A subnet's id by its CIDR.
async fn subnet_id(c: &Clients, vpc: &str, cidr: &str) -> String {
    c.ec2
        .describe_subnets()
        .filters(filter("vpc-id", vpc))
        .filters(filter("cidr-block", cidr))
        .send()
        .await
        .expect("subnets")
        .subnets()
        .first()
        .and_then(|s| s.subnet_id())
        .unwrap_or_else(|| panic!("no subnet {cidr}"))
        .to_owned()
}

/// A NAT gateway in the public subnet of us-east-1a, and a private subnet
/// there whose route table sends 0.0.0.0/0 to it: (subnet, route table,
/// NAT gateway, its public address).
async fn private_subnet_behind_nat(c: &Clients, vpc: &str) -> (String, String, String, String) {
    let public = subnet_id(c, vpc, "10.0.1.0/24").await;
    let eip = c
        .ec2
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .expect("NAT gateway address");
    let nat = c
        .ec2
        .create_nat_gateway()
        .subnet_id(&public)
        .allocation_id(eip.allocation_id().expect("allocation"))
        .send()
        .await
        .expect("NAT gateway")
        .nat_gateway()
        .and_then(|g| g.nat_gateway_id())
        .expect("nat id")
        .to_owned();
    let private = c
        .ec2
        .create_subnet()
        .vpc_id(vpc)
        .cidr_block("10.0.4.0/24")
        .availability_zone("us-east-1a")
        .send()
        .await
        .expect("private subnet")
        .subnet()
        .and_then(|s| s.subnet_id())
        .expect("subnet id")
        .to_owned();
    let table = c
        .ec2
        .create_route_table()
        .vpc_id(vpc)
        .send()
        .await
        .expect("route table")
        .route_table()
        .and_then(|t| t.route_table_id())
        .expect("rtb id")
        .to_owned();
    c.ec2
        .create_route()
        .route_table_id(&table)
        .destination_cidr_block("0.0.0.0/0")
        .nat_gateway_id(&nat)
        .send()
        .await
        .expect("route to the NAT gateway");
    c.ec2
        .associate_route_table()
        .route_table_id(&table)
        .subnet_id(&private)
        .send()
        .await
        .expect("associate");
    (
        private,
        table,
        nat,
        eip.public_ip().expect("public ip").to_owned(),
    )
}

/// An exit node whose forwarded traffic leaves through a second interface
/// in a private subnet behind a NAT gateway: a subnet that does not route
/// through one is refused with nothing created; plan shows the interface;
/// deploy creates it (tagged, check off, device index 1, its MAC in the
/// user data's `[exit_node]`) with an Elastic IP on the instance's own
/// interface; status names the NAT gateway's address; destroy removes both.
#[test]
fn exit_node_egress_through_a_nat_gateway_is_created_shown_and_destroyed() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let key_file = cloud.key_file();
    let (private, private_table, nat, nat_ip) =
        cloud.block(private_subnet_behind_nat(c, &cloud.vpc));
    let (public, isolated) = cloud.block(async {
        (
            subnet_id(c, &cloud.vpc, "10.0.1.0/24").await,
            subnet_id(c, &cloud.vpc, "10.0.3.0/24").await,
        )
    });
    let public_table = cloud.block(async {
        c.ec2
            .describe_route_tables()
            .filters(filter("association.subnet-id", &public))
            .send()
            .await
            .expect("tables")
            .route_tables()[0]
            .route_table_id()
            .expect("id")
            .to_owned()
    });

    // Subnets whose default route is not a NAT gateway are refused,
    // naming the subnet, its route table and what the route points at.
    for (subnet, expect) in [
        (
            public.as_str(),
            format!(
                "--egress-subnet {public}: its route table {public_table} sends 0.0.0.0/0 to igw-"
            ),
        ),
        (
            isolated.as_str(),
            format!("--egress-subnet {isolated}: its route table rtb-"),
        ),
        (
            "subnet-0123456789abcdef0",
            format!(
                "--egress-subnet subnet-0123456789abcdef0 is not a subnet of --vpc {}",
                cloud.vpc
            ),
        ),
    ] {
        let mut args = cloud.deploy_args("deploy", "exit1", "exit-node");
        args.extend(["--auth-key-file", &key_file, "--egress-subnet", subnet]);
        let out = cloud.run(&args);
        assert!(!out.status.success(), "{subnet} must be refused");
        let t = text(&out);
        assert!(t.contains(&expect), "expected {expect:?} in\n{t}");
        assert!(t.contains("refused before creating anything"), "{t}");
    }
    let out = cloud.run(&{
        let mut args = cloud.deploy_args("deploy", "exit1", "subnet-router");
        args.extend(["--auth-key-file", &key_file, "--egress-subnet", &private]);
        args
    });
    assert!(
        text(&out).contains(&format!(
            "--egress-subnet {private} with --role subnet-router"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(cloud.block(tagged(c, "exit1")), Vec::<String>::new());

    let mut plan = cloud.deploy_args("plan", "exit1", "exit-node");
    plan.extend(["--auth-key-file", &key_file, "--egress-subnet", &private]);
    let planned = pending(&cloud.run(&plan));
    assert!(
        planned.contains(&format!(
            "create    egress interface causeway-exit1-exit-node-egress (in {private} (us-east-1a), device index 1, source/destination check off, 0.0.0.0/0 via {nat} in {private_table}; third parties see {nat_ip})"
        )),
        "{planned}"
    );
    assert!(
        planned.contains("create    Elastic IP causeway-exit1-exit-node"),
        "{planned}"
    );
    assert_eq!(
        cloud.block(tagged(c, "exit1")),
        Vec::<String>::new(),
        "plan created something"
    );

    let mut deploy = cloud.deploy_args("deploy", "exit1", "exit-node");
    deploy.extend([
        "--auth-key-file",
        &key_file,
        "--egress-subnet",
        &private,
        "--output",
        "json",
    ]);
    let report = json(&ok(cloud.run(&deploy)));
    assert_eq!(report["role"], "exit-node");
    assert_eq!(report["routes"], serde_json::json!(["0.0.0.0/0", "::/0"]));
    assert_eq!(
        report["subnets"][0]["id"],
        public.as_str(),
        "beside the egress subnet, in its AZ"
    );

    let (instance, eni) = cloud.block(async {
        let found = instances(c, "exit1").await;
        assert_eq!(found.len(), 1);
        let i = found[0].clone();
        let enis = c
            .ec2
            .describe_network_interfaces()
            .filters(filter("tag:causeway:interface", "egress"))
            .filters(filter("tag:causeway:deployment", "exit1"))
            .send()
            .await
            .expect("interfaces");
        assert_eq!(enis.network_interfaces().len(), 1, "{enis:?}");
        (i, enis.network_interfaces()[0].clone())
    });
    let instance_id = instance.instance_id().expect("id").to_owned();
    let eni_id = eni.network_interface_id().expect("id").to_owned();
    let mac = eni.mac_address().expect("mac").to_owned();
    assert_eq!(eni.subnet_id(), Some(private.as_str()));
    assert_eq!(
        eni.source_dest_check(),
        Some(false),
        "the egress interface forwards"
    );
    let attachment = eni.attachment().expect("attached");
    assert_eq!(
        (attachment.instance_id(), attachment.device_index()),
        (Some(instance_id.as_str()), Some(1))
    );
    assert_eq!(
        instance.placement().and_then(|p| p.availability_zone()),
        Some("us-east-1a")
    );
    assert_eq!(instance.subnet_id(), Some(public.as_str()));
    assert_eq!(
        instance.source_dest_check(),
        Some(false),
        "an exit node forwards"
    );
    let (eip, eip_alloc) = cloud.block(async {
        let a = c
            .ec2
            .describe_addresses()
            .filters(filter("tag:causeway:deployment", "exit1"))
            .send()
            .await
            .expect("addresses");
        assert_eq!(a.addresses().len(), 1, "{a:?}");
        let a = a.addresses()[0].clone();
        let primary = instance
            .network_interfaces()
            .iter()
            .find(|n| n.attachment().and_then(|t| t.device_index()) == Some(0))
            .and_then(|n| n.network_interface_id())
            .expect("a primary interface");
        assert_eq!(
            a.network_interface_id(),
            Some(primary),
            "on the exit node's own interface"
        );
        (
            a.public_ip().expect("ip").to_owned(),
            a.allocation_id().expect("id").to_owned(),
        )
    });
    assert_ne!(eip, nat_ip);

    // The user data: an exit node, not a subnet router, naming the MAC.
    let ud = cloud.block(template_user_data(c, "causeway-exit1-exit-node"));
    let v: toml::Value = toml::from_str(&ud).expect("TOML");
    assert!(v.get("subnet_router").is_none(), "{ud}");
    assert_eq!(
        v["exit_node"]["egress_mac"].as_str(),
        Some(mac.as_str()),
        "{ud}"
    );
    // Only WireGuard in, and the egress interface takes nothing.
    assert_eq!(
        cloud.block(groups_of(c, "exit1")),
        BTreeMap::from([
            ("causeway-exit1-exit-node".to_owned(), wireguard_only()),
            (
                "causeway-exit1-exit-node-egress".to_owned(),
                BTreeSet::new()
            ),
        ])
    );
    // IAM: reading its own secret, nothing more.
    assert_eq!(
        cloud.block(role_policy_names(c, "causeway-exit1-exit-node")),
        ["causeway-auth-key"]
    );

    // A second deploy changes nothing.
    let mut again = cloud.deploy_args("plan", "exit1", "exit-node");
    again.extend(["--auth-key-file", &key_file, "--egress-subnet", &private]);
    let out = cloud.run(&again);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing to change:\n{}",
        text(&out)
    );

    // status: an exit node, its egress interface and what third parties see.
    let status = |format: &str| {
        cloud.run(&[
            "status", "--cloud", "aws", "--name", "exit1", "--output", format,
        ])
    };
    let out = status("json");
    let s = json(&out);
    let egress = &s["instances"][0]["egress"];
    assert_eq!(egress["interface"], eni_id.as_str());
    assert_eq!(egress["mac"], mac.as_str());
    assert_eq!(egress["nat_gateway"], nat.as_str());
    assert_eq!(egress["third_parties_see"], nat_ip.as_str());
    let out = status("text");
    let t = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(t.contains("exit node: offers 0.0.0.0/0 and ::/0"), "{t}");
    assert!(t.contains(&format!("third parties see {nat_ip}")), "{t}");
    assert!(t.contains(&format!("public {eip}")), "{t}");

    ok(cloud.run(&["destroy", "--cloud", "aws", "--name", "exit1"]));
    assert_eq!(cloud.block(tagged(c, "exit1")), Vec::<String>::new());
    cloud.block(async {
        let gone = c
            .ec2
            .describe_network_interfaces()
            .network_interface_ids(&eni_id)
            .send()
            .await;
        assert!(
            gone.as_ref()
                .map_or(true, |o| o.network_interfaces().is_empty()),
            "the egress interface is left: {gone:?}"
        );
        let released = c
            .ec2
            .describe_addresses()
            .allocation_ids(&eip_alloc)
            .send()
            .await;
        assert!(
            released.as_ref().map_or(true, |o| o.addresses().is_empty()),
            "the Elastic IP is left: {released:?}"
        );
    });
}

/// An app connector: `--domain` is required with it and refused with any
/// other role, and a bad domain is refused, each before anything is
/// created; deploy writes the domains into the user data's
/// `[app_connector]`, turns the source/destination check off (it forwards
/// to whatever its domains resolve to) and adds no return route; a second
/// plan changes nothing; status names the domains; destroy leaves nothing.
#[test]
fn app_connector_writes_its_domains_forwards_and_destroys_cleanly() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let key_file = cloud.key_file();
    let with = |verb: &'static str, role: &'static str, extra: &[&'static str]| {
        let mut args: Vec<String> = cloud
            .deploy_args(verb, "conn1", role)
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(["--auth-key-file".to_owned(), key_file.clone()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cloud.run(&refs)
    };

    for (args, expect) in [
        (
            with("plan", "app-connector", &[]),
            "--domain is required with --role app-connector",
        ),
        (
            with("deploy", "app-connector", &["--domain", "*.com"]),
            "--domain *.com: app connector domain \"*.com\": a wildcard over a top-level domain is too broad",
        ),
        (
            with("deploy", "exit-node", &["--domain", "app.example.com"]),
            "--domain app.example.com with --role exit-node: only an app connector routes domains",
        ),
        (
            with(
                "deploy",
                "app-connector",
                &["--domain", "app.example.com", "--no-snat"],
            ),
            "--no-snat with --role app-connector",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}:\n{}", text(&out));
        let t = text(&out);
        assert!(t.contains(expect), "expected {expect:?} in\n{t}");
    }
    assert_eq!(cloud.block(tagged(c, "conn1")), Vec::<String>::new());

    let domains: [&'static str; 4] = ["--domain", "app.example.com", "--domain", "*.example.net"];
    let planned = pending(&run(&with("plan", "app-connector", &domains)));
    assert!(
        planned.contains("  domains: app.example.com, *.example.net\n"),
        "{planned}"
    );
    assert!(
        planned.contains("create    launch template causeway-conn1-app-connector"),
        "{planned}"
    );
    assert_eq!(
        cloud.block(tagged(c, "conn1")),
        Vec::<String>::new(),
        "plan created something"
    );

    let mut deploy = with("deploy", "app-connector", &domains);
    deploy.extend(["--output".to_owned(), "json".to_owned()]);
    let report = json(&ok(run(&deploy)));
    assert_eq!(report["role"], "app-connector");
    assert_eq!(report["routes"], serde_json::json!([]));
    assert_eq!(
        report["domains"],
        serde_json::json!(["app.example.com", "*.example.net"])
    );

    let found = cloud.block(instances(c, "conn1"));
    assert_eq!(found.len(), 1, "one connector");
    assert_eq!(
        found[0].source_dest_check(),
        Some(false),
        "an app connector forwards to arbitrary destinations"
    );
    let ud = cloud.block(template_user_data(c, "causeway-conn1-app-connector"));
    let v: toml::Value = toml::from_str(&ud).expect("TOML");
    assert!(
        v.get("subnet_router").is_none() && v.get("exit_node").is_none(),
        "{ud}"
    );
    let written: Vec<&str> = v["app_connector"]["domains"]
        .as_array()
        .expect("domains")
        .iter()
        .filter_map(toml::Value::as_str)
        .collect();
    assert_eq!(written, ["app.example.com", "*.example.net"], "{ud}");
    assert!(!ud.contains(SECRET), "{ud}");

    // No tailnet return route, only WireGuard in, only its secret readable.
    let tables = cloud.block(async {
        c.ec2
            .describe_route_tables()
            .filters(filter("vpc-id", &cloud.vpc))
            .send()
            .await
            .expect("tables")
            .route_tables()
            .iter()
            .flat_map(|t| t.routes())
            .filter_map(|r| r.destination_cidr_block().map(str::to_owned))
            .filter(|d| d == "100.64.0.0/10")
            .collect::<Vec<String>>()
    });
    assert_eq!(tables, Vec::<String>::new(), "no tailnet return route");
    assert_eq!(
        cloud.block(groups_of(c, "conn1")),
        BTreeMap::from([("causeway-conn1-app-connector".to_owned(), wireguard_only())])
    );
    assert_eq!(
        cloud.block(role_policy_names(c, "causeway-conn1-app-connector")),
        ["causeway-auth-key"]
    );

    // A second run changes nothing; other domains change the template.
    let out = run(&with("plan", "app-connector", &domains));
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing to change:\n{}",
        text(&out)
    );
    let out = run(&with(
        "plan",
        "app-connector",
        &["--domain", "app.example.com"],
    ));
    let planned = pending(&out);
    assert!(
        planned.contains("update    launch template causeway-conn1-app-connector"),
        "{planned}"
    );

    // status: the connector and its domains.
    let status = |format: &str| {
        cloud.run(&[
            "status", "--cloud", "aws", "--name", "conn1", "--output", format,
        ])
    };
    let s = json(&status("json"));
    assert_eq!(
        s["instances"][0]["app_connector"]["domains"],
        serde_json::json!(["app.example.com", "*.example.net"])
    );
    let t = String::from_utf8_lossy(&status("text").stdout).to_string();
    assert!(
        t.contains("app connector: routes what app.example.com, *.example.net resolve to"),
        "{t}"
    );

    ok(cloud.run(&["destroy", "--cloud", "aws", "--name", "conn1"]));
    assert_eq!(cloud.block(tagged(c, "conn1")), Vec::<String>::new());
}

/// An app connector's health is its appliance's: deploy mints a key
/// tagged `tag:app-connector`, waits until the connector has registered
/// and holds its netmap stream (it asks for no route: none is known until
/// a client resolves a name), then retires the key; status calls it an app
/// connector, not a standby.
#[test]
fn app_connector_is_healthy_once_registered_and_online() {
    let cloud = Cloud::new();
    let control = LiveControl::start();
    let admin = control.admin_args();
    let mut deploy = cloud.deploy_args("deploy", "conn2", "app-connector");
    deploy.extend(["--domain", "app.example.com", "--health-timeout", "120"]);
    deploy.extend(admin.iter().map(String::as_str));
    let run = cloud.spawn(&deploy);
    let minted = instances_join(&cloud, &control, ("conn2", "app-connector"), 1, &[]);
    let out = ok(run.wait_with_output().expect("provisioner ends"));
    let t = text(&out);
    assert!(!t.contains(&minted), "the key leaked:\n{t}");
    assert!(t.contains("appliance healthy (node "), "{t}");

    let keys = control.get("/api/v1/keys");
    let keys = keys.as_array().expect("key list");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["tags"], serde_json::json!(["tag:app-connector"]));
    assert_eq!(keys[0]["revoked"], true, "retired once healthy: {keys:?}");

    let mut status = vec![
        "status", "--cloud", "aws", "--name", "conn2", "--output", "json",
    ];
    status.extend(admin.iter().map(String::as_str));
    let s = json(&ok(cloud.run(&status)));
    assert_eq!(s["healthy"], true, "{s}");
    assert_eq!(s["instances"][0]["ha_role"], "app connector", "{s}");
    assert_eq!(
        s["instances"][0]["app_connector"]["domains"],
        serde_json::json!(["app.example.com"]),
        "{s}"
    );
}

/// A 4via6 router: `--site-id` is required with it, bounded and refused
/// with any other role, and `--ha` and `--no-snat` are refused, each before
/// anything is created; deploy writes the VPC's range with `site_id` into
/// the user data's routes, keeps the source/destination check on (SNAT)
/// and adds no return route; a second plan changes nothing, another site
/// ID changes the template; status names the site and range; destroy
/// leaves nothing.
#[test]
fn via6_router_writes_its_site_id_and_destroys_cleanly() {
    let cloud = Cloud::new();
    let c = &cloud.c;
    let key_file = cloud.key_file();
    let with = |verb: &'static str, role: &'static str, extra: &[&'static str]| {
        let mut args: Vec<String> = cloud
            .deploy_args(verb, "via1", role)
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(["--auth-key-file".to_owned(), key_file.clone()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let run = |args: &[String]| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        cloud.run(&refs)
    };

    for (args, expect) in [
        (
            with("plan", "via6", &[]),
            "--site-id is required with --role via6",
        ),
        (
            with("deploy", "via6", &["--site-id", "65536"]),
            "--site-id 65536: expected 0 to 65535",
        ),
        (
            with("deploy", "subnet-router", &["--site-id", "7"]),
            "--site-id 7 with --role subnet-router: only a 4via6 router",
        ),
        (
            with("deploy", "via6", &["--site-id", "7", "--ha"]),
            "--ha with --role via6: HA pairs of 4via6 routers are not built",
        ),
        (
            with("deploy", "via6", &["--site-id", "7", "--no-snat"]),
            "--no-snat with --role via6",
        ),
        (
            with(
                "deploy",
                "via6",
                &["--site-id", "7", "--route", "fd00::/64"],
            ),
            "--route fd00::/64 with --role via6: 4via6 maps IPv4 ranges",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}:\n{}", text(&out));
        let t = text(&out);
        assert!(t.contains(expect), "expected {expect:?} in\n{t}");
    }
    assert_eq!(cloud.block(tagged(c, "via1")), Vec::<String>::new());

    let site: [&'static str; 2] = ["--site-id", "7"];
    let planned = pending(&run(&with("plan", "via6", &site)));
    assert!(
        planned.contains("  routes:  10.0.0.0/16 at 4via6 site 7, advertised as the site's IPv6 routes in the tailnet's range (approved by control's policy autoApprovers.routes site:7:10.0.0.0/16 for tag:via6, or by an admin)\n"),
        "{planned}"
    );
    assert!(
        planned.contains("create    launch template causeway-via1-via6"),
        "{planned}"
    );
    assert_eq!(
        cloud.block(tagged(c, "via1")),
        Vec::<String>::new(),
        "plan created something"
    );

    let mut deploy = with("deploy", "via6", &site);
    deploy.extend(["--output".to_owned(), "json".to_owned()]);
    let report = json(&ok(run(&deploy)));
    assert_eq!(report["role"], "via6");
    assert_eq!(report["routes"], serde_json::json!(["10.0.0.0/16"]));
    assert_eq!(report["site_id"], 7);

    let found = cloud.block(instances(c, "via1"));
    assert_eq!(found.len(), 1, "one router");
    assert_eq!(
        found[0].source_dest_check(),
        Some(true),
        "a 4via6 router masquerades: the check stays on"
    );
    let ud = cloud.block(template_user_data(c, "causeway-via1-via6"));
    let v: toml::Value = toml::from_str(&ud).expect("TOML");
    let routes = v["subnet_router"]["routes"].as_array().expect("routes");
    let written: Vec<(Option<&str>, Option<i64>, Option<bool>)> = routes
        .iter()
        .map(|r| {
            (
                r.get("prefix").and_then(toml::Value::as_str),
                r.get("site_id").and_then(toml::Value::as_integer),
                r.get("snat").and_then(toml::Value::as_bool),
            )
        })
        .collect();
    assert_eq!(
        written,
        [(Some("10.0.0.0/16"), Some(7), Some(true))],
        "{ud}"
    );
    assert!(v["subnet_router"].get("aws_route_tables").is_none(), "{ud}");
    assert!(!ud.contains(SECRET), "{ud}");
    assert_eq!(
        cloud.block(groups_of(c, "via1")),
        BTreeMap::from([("causeway-via1-via6".to_owned(), wireguard_only())])
    );

    // A second run changes nothing; another site changes the template.
    let out = run(&with("plan", "via6", &site));
    assert_eq!(
        out.status.code(),
        Some(0),
        "nothing to change:\n{}",
        text(&out)
    );
    let planned = pending(&run(&with("plan", "via6", &["--site-id", "8"])));
    assert!(
        planned.contains("update    launch template causeway-via1-via6"),
        "{planned}"
    );

    // status: the site and its range (control not asked: no IPv6 route).
    let status = |format: &str| {
        cloud.run(&[
            "status", "--cloud", "aws", "--name", "via1", "--output", format,
        ])
    };
    let s = json(&status("json"));
    assert_eq!(s["instances"][0]["via6"]["site_id"], 7, "{s}");
    assert_eq!(
        s["instances"][0]["via6"]["ranges"],
        serde_json::json!(["10.0.0.0/16"]),
        "{s}"
    );
    let t = String::from_utf8_lossy(&status("text").stdout).to_string();
    assert!(t.contains("4via6 site 7: serves 10.0.0.0/16"), "{t}");

    ok(cloud.run(&["destroy", "--cloud", "aws", "--name", "via1"]));
    assert_eq!(cloud.block(tagged(c, "via1")), Vec::<String>::new());
}

/// A 4via6 router's health is judged on the site's IPv6 route, not the
/// VPC's range: deploy mints a key tagged `tag:via6`, the router joins
/// advertising `site:7:10.0.0.0/16` as the IPv6 route in the tailnet's
/// /48, control's policy approves it by its `site:7:10.0.0.0/16` key, and
/// deploy calls it healthy and retires the key; status shows the site and
/// the IPv6 route.
#[test]
fn via6_router_is_healthy_once_its_site_route_is_approved() {
    let cloud = Cloud::new();
    let control = LiveControl::start();
    control.put_policy(r#"{"autoApprovers": {"routes": {"site:7:10.0.0.0/16": ["tag:via6"]}}}"#);
    let admin = control.admin_args();
    let mut deploy = cloud.deploy_args("deploy", "via2", "via6");
    deploy.extend(["--site-id", "7", "--health-timeout", "120"]);
    deploy.extend(admin.iter().map(String::as_str));
    let run = cloud.spawn(&deploy);
    let minted = instances_join(
        &cloud,
        &control,
        ("via2", "via6"),
        1,
        &["site:7:10.0.0.0/16"],
    );
    let out = ok(run.wait_with_output().expect("provisioner ends"));
    let t = text(&out);
    assert!(!t.contains(&minted), "the key leaked:\n{t}");
    assert!(t.contains("appliance healthy (node "), "{t}");

    let keys = control.get("/api/v1/keys");
    let keys = keys.as_array().expect("key list");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["tags"], serde_json::json!(["tag:via6"]));
    assert_eq!(keys[0]["revoked"], true, "retired once healthy: {keys:?}");

    let mut status = vec![
        "status", "--cloud", "aws", "--name", "via2", "--output", "json",
    ];
    status.extend(admin.iter().map(String::as_str));
    let s = json(&ok(cloud.run(&status)));
    assert_eq!(s["healthy"], true, "{s}");
    assert_eq!(s["instances"][0]["ha_role"], "primary", "{s}");
    let via6 = &s["instances"][0]["via6"];
    assert_eq!(via6["site_id"], 7, "{s}");
    let routes = via6["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 1, "{s}");
    assert_eq!(routes[0]["site_id"], 7);
    assert_eq!(routes[0]["range"], "10.0.0.0/16");
    let prefix = routes[0]["prefix"].as_str().expect("prefix");
    assert!(
        prefix.contains(":b1a:0:7:a00:0/112"),
        "the site's route in the tailnet's /48: {prefix}"
    );
}
