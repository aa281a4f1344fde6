//! The Terraform modules in `terraform/`, tested three ways:
//!
//! - `terraform test` with a mocked AWS provider, per module (logic, seconds);
//! - each example applied to moto in server mode through the real AWS
//!   provider, inspected through the AWS API (aws CLI), checked to plan no
//!   change, destroyed, and checked to leave nothing tagged behind;
//! - checkov over `terraform/`, offline, with no failed check.
//!
//! Needs terraform (>= 1.11), the `hashicorp/aws` provider in a filesystem
//! mirror (`/opt/tf-plugins`, or `CAUSEWAY_TF_MIRROR`), `moto_server`, the
//! `aws` CLI and checkov (`/opt/checkov-venv/bin/checkov`, or `CHECKOV`).
//! A missing tool fails the test with what to install; nothing is skipped.
//!
//! Nothing is written to the source tree: `terraform/` is copied into a
//! temporary directory, where the moto provider settings go into an override
//! file (the modules and examples stay cloud-agnostic).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use causeway_e2e::{Ran, appliance_roles, check_config, run};
use causeway_provisioner::role::Role;
use causeway_test_support::{CLIENT_ENV, Moto};
use serde_json::Value;

/// Inspects one example's deployment through the AWS API: (aws, outputs, name).
type Inspect = fn(&Aws, &Value, &str);

/// Upper bound for any single terraform command (apply waits ~55 s on moto
/// for S3 lifecycle consistency).
const TF_TIMEOUT: Duration = Duration::from_secs(600);

/// Upper bound for one aws CLI call.
const AWS_TIMEOUT: Duration = Duration::from_secs(60);

const MODULES: [&str; 3] = ["appliance", "recorder-storage", "split-dns"];

const CONTROL_URL: &str = "http://control.example.internal:8080";
/// A well-formed key (32 bytes, base64): the user data goes through `appliance check-config`.
const CONTROL_PUBLIC_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

// ---------------------------------------------------------------------------
// Tests

#[test]
fn modules_pass_terraform_test_with_a_mocked_provider() {
    let tf = Terraform::new();
    let tree = tf.copy_tree();
    // The modules are independent: test them side by side.
    let results: Vec<(String, Ran)> = std::thread::scope(|s| {
        let handles: Vec<_> = MODULES
            .iter()
            .map(|module| {
                let dir = tree.path().join("modules").join(module);
                let tf = &tf;
                s.spawn(move || {
                    tf.run(&dir, &["init", "-backend=false"]).expect_success();
                    (module.to_string(), tf.run(&dir, &["test"]))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a module test thread panicked"))
            .collect()
    });
    let mut failures = Vec::new();
    for (module, ran) in &results {
        eprintln!("module {module}: {:.1} s", ran.elapsed.as_secs_f64());
        if !ran.success() || !ran.stdout.contains(", 0 failed") {
            failures.push(format!("module {module}: {ran}"));
        }
    }
    assert!(
        failures.is_empty(),
        "terraform test failed:\n{}",
        failures.join("\n\n")
    );
}

#[test]
fn module_user_data_of_every_role_passes_appliance_check_config() {
    let tf = Terraform::new();
    let tree = tf.copy_tree();
    let module = tree.path().join("modules/appliance/modules/user-data");
    // Every role the provisioner deploys, each as the appliance module
    // passes it (the module refuses the others: appliance.tftest.hcl).
    let roles = Role::built();
    let mut config = String::new();
    for role in &roles {
        let recorder = if *role == Role::Recorder {
            r#"{ bucket = "causeway-prod-recordings-123456789012", region = "eu-west-1", allow = ["100.64.0.0/10", "198.19.4.0/24"], ui = true }"#
        } else {
            "null"
        };
        let secret = if role.needs_auth_key() {
            format!(
                "\"arn:aws:secretsmanager:eu-west-1:123456789012:secret:causeway/prod/{role}-authkey-AbCdEf\""
            )
        } else {
            "null".to_owned()
        };
        let state_volume = if *role == Role::Control {
            r#""vol-0123456789abcdef0""#
        } else {
            "null"
        };
        let egress_mac = if *role == Role::ExitNode {
            r#""0a:1b:2c:3d:4e:5f""#
        } else {
            "null"
        };
        let domains = if *role == Role::AppConnector {
            r#"["app.example.com", "*.example.net"]"#
        } else {
            "[]"
        };
        // A 4via6 router maps IPv4 ranges, with SNAT (the appliance module
        // refuses IPv6 routes and snat = false with it).
        let (site_id, routes, snat) = if *role == Role::Via6 {
            ("7", r#"["198.19.0.0/16", "10.0.0.0/16"]"#, "true")
        } else {
            ("null", r#"["198.19.0.0/16", "fd00:198:19::/48"]"#, "false")
        };
        config.push_str(&format!(
            r#"
module "{role}" {{
  source             = "{source}"
  role               = "{role}"
  control_url        = "https://198.18.0.10:8080"
  control_public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
  auth_key_secret    = {secret}
  state_volume       = {state_volume}
  egress_mac         = {egress_mac}
  app_connector_domains = {domains}
  site_id            = {site_id}
  routes             = {routes}
  snat               = {snat}
  recorder           = {recorder}
}}
output "{role}" {{
  value = module.{role}.text
}}
"#,
            source = module.display(),
        ));
    }
    let outputs = tf.render_offline(&config);
    for role in roles {
        let text = outputs[role.as_str()]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("no user data output for {role}: {outputs:#}"));
        let ran = check_config(role.as_str(), text);
        assert!(
            ran.success(),
            "role {role}: the appliance refuses the module's user data: {ran}\n{text}"
        );
        assert!(
            ran.stdout
                .contains(&format!("valid; roles: {}", appliance_roles(role))),
            "role {role}: {}",
            ran.stdout
        );
    }
    // The connector's section is the provisioner's for the same domains.
    let module_text = outputs["app-connector"]["value"]
        .as_str()
        .expect("the app connector's user data");
    let provisioners =
        provisioner_connector_user_data(&["app.example.com".into(), "*.example.net".into()]);
    assert_eq!(
        app_connector_section(module_text),
        app_connector_section(&provisioners),
        "{module_text}\n---\n{provisioners}"
    );
    // The 4via6 router's routes are the provisioner's for the same ranges
    // and site, site_id on each.
    let module_text = outputs["via6"]["value"]
        .as_str()
        .expect("the 4via6 router's user data");
    let provisioners =
        provisioner_via6_user_data(&["198.19.0.0/16".into(), "10.0.0.0/16".into()], 7);
    let routes = subnet_router_routes(module_text);
    assert_eq!(
        routes,
        subnet_router_routes(&provisioners),
        "{module_text}\n---\n{provisioners}"
    );
    assert_eq!(routes.len(), 2, "{module_text}");
    assert!(
        routes
            .iter()
            .all(|r| r.get("site_id") == Some(&serde_json::json!(7))),
        "{module_text}"
    );
}

/// One statement of an instance role's inline policy, reduced to what the
/// contract fixes: policy name, Sid, sorted actions, resource.
type Grant = (String, String, Vec<String>, String);

/// The region, account and route table the contract's `causeway-return-route`
/// rows are filled in with.
const RETURN_ROUTE_REGION: &str = "eu-west-1";
const RETURN_ROUTE_ACCOUNT: &str = "123456789012";
const RETURN_ROUTE_TABLE: &str = "rtb-0123456789abcdef0";

/// The rows of docs/reference/aws-contract.md's "Instance role policies"
/// table that apply with the UI on or off and a KMS key or none, with
/// `BUCKET`, `KEY_ARN` and `SECRET_ARN` filled in.
fn contract_grants(ui: bool, kms: bool, bucket: &str, key: &str, secret: &str) -> BTreeSet<Grant> {
    let doc_path = terraform_source().join("../docs/reference/aws-contract.md");
    let doc = fs::read_to_string(&doc_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", doc_path.display()));
    let table = doc
        .split("## Instance role policies")
        .nth(1)
        .expect("the contract has an \"Instance role policies\" section");
    let code = |cell: &str| -> Vec<String> {
        cell.split(',')
            .map(|c| c.trim().trim_matches('`').to_owned())
            .filter(|c| !c.is_empty())
            .collect()
    };
    let mut grants = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with("| `causeway-")) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let [policy, sid, actions, resource, when] = cells[..] else {
            panic!("a contract row has five cells: {row}");
        };
        let applies = match when {
            "every role but control" => true,
            "role recorder" => true,
            "role recorder with `--recorder-ui`" => ui,
            "role recorder with `--kms-key`" => kms,
            "role subnet-router with `--no-snat`" => true,
            other => panic!("unknown condition {other:?} in the contract's row {row}"),
        };
        if !applies {
            continue;
        }
        let mut actions = code(actions);
        actions.sort();
        let resource = code(resource)
            .join("")
            .replace("BUCKET", bucket)
            .replace("KEY_ARN", key)
            .replace("SECRET_ARN", secret)
            .replace("REGION", RETURN_ROUTE_REGION)
            .replace("ACCOUNT", RETURN_ROUTE_ACCOUNT)
            .replace("RTB", RETURN_ROUTE_TABLE);
        grants.insert((code(policy).join(""), code(sid).join(""), actions, resource));
    }
    grants
}

/// A policy document's statements as [`Grant`]s of policy `name`.
fn document_grants(name: &str, doc: &Value) -> BTreeSet<Grant> {
    statements(doc)
        .iter()
        .map(|s| {
            assert_eq!(s["Effect"], "Allow", "{name}: {s}");
            let mut actions = strings(&s["Action"]);
            actions.sort();
            let resources = strings(&s["Resource"]);
            assert_eq!(
                resources.len(),
                1,
                "{name}: one resource per statement: {s}"
            );
            (
                name.to_owned(),
                s["Sid"].as_str().unwrap_or_default().to_owned(),
                actions,
                resources[0].clone(),
            )
        })
        .collect()
}

#[test]
fn role_policies_agree_with_the_contract_in_provisioner_and_terraform() {
    use causeway_provisioner::aws::spec;
    let bucket = "causeway-prod-recordings-123456789012";
    let key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:causeway/prod/recorder-authkey-AbCdEf";

    // Terraform: the recorder-storage module's policy, rendered offline
    // for each combination of UI and key.
    let tf = Terraform::new();
    let tree = tf.copy_tree();
    let module = tree.path().join("modules/recorder-storage/modules/policy");
    let combos = [(false, false), (true, false), (false, true), (true, true)];
    let mut config = String::new();
    for (ui, kms) in combos {
        let kms_arg = if kms {
            format!("\"{key}\"")
        } else {
            "null".to_owned()
        };
        config.push_str(&format!(
            r#"
module "p_{ui}_{kms}" {{
  source      = "{source}"
  bucket_arn  = "arn:aws:s3:::{bucket}"
  kms_key_arn = {kms_arg}
  ui          = {ui}
}}
output "p_{ui}_{kms}" {{
  value = {{ name = module.p_{ui}_{kms}.name, json = module.p_{ui}_{kms}.json }}
}}
"#,
            source = module.display(),
        ));
    }
    let outputs = tf.render_offline(&config);

    for (ui, kms) in combos {
        let contract = contract_grants(ui, kms, bucket, key, secret);
        let recordings: BTreeSet<Grant> = contract
            .iter()
            .filter(|g| g.0 == spec::RECORDINGS_POLICY_NAME)
            .cloned()
            .collect();
        assert!(
            recordings.len() >= 2,
            "the contract lists the recorder's statements under {}: {contract:?}",
            spec::RECORDINGS_POLICY_NAME
        );

        let provisioner_doc: Value =
            serde_json::from_str(&spec::recordings_policy(bucket, ui, kms.then_some(key)))
                .expect("the provisioner's policy is JSON");
        assert_eq!(
            document_grants(spec::RECORDINGS_POLICY_NAME, &provisioner_doc),
            recordings,
            "provisioner (ui {ui}, kms {kms}) against the contract"
        );

        let out = &outputs[format!("p_{ui}_{kms}")]["value"];
        let tf_name = out["name"].as_str().expect("policy name");
        let tf_doc: Value = serde_json::from_str(out["json"].as_str().expect("policy JSON"))
            .expect("the module's policy is JSON");
        assert_eq!(
            document_grants(tf_name, &tf_doc),
            recordings,
            "Terraform (ui {ui}, kms {kms}) against the contract"
        );

        let auth: BTreeSet<Grant> = contract
            .iter()
            .filter(|g| g.0 == spec::SECRET_POLICY_NAME)
            .cloned()
            .collect();
        let secret_doc: Value = serde_json::from_str(&spec::secret_policy(secret)).expect("JSON");
        assert_eq!(
            document_grants(spec::SECRET_POLICY_NAME, &secret_doc),
            auth,
            "the provisioner's auth-key policy against the contract"
        );

        let return_route: BTreeSet<Grant> = contract
            .iter()
            .filter(|g| g.0 == spec::RETURN_ROUTE_POLICY_NAME)
            .cloned()
            .collect();
        assert_eq!(return_route.len(), 2, "{contract:?}");
        let route_doc: Value = serde_json::from_str(&spec::return_route_policy(
            RETURN_ROUTE_REGION,
            RETURN_ROUTE_ACCOUNT,
            &[RETURN_ROUTE_TABLE.to_owned()],
        ))
        .expect("JSON");
        assert_eq!(
            document_grants(spec::RETURN_ROUTE_POLICY_NAME, &route_doc),
            return_route,
            "the provisioner's return-route policy against the contract"
        );
    }
    // The Terraform module names its auth-key policy as the contract does
    // (the moto apply checks its statement on the live role).
    let appliance = fs::read_to_string(terraform_source().join("modules/appliance/main.tf"))
        .expect("reading the appliance module");
    assert!(
        appliance.contains(&format!("name   = \"{}\"", spec::SECRET_POLICY_NAME)),
        "the appliance module's auth-key policy is not named {}",
        spec::SECRET_POLICY_NAME
    );
}

#[test]
fn examples_apply_to_moto_inspect_and_destroy_cleanly() {
    let tf = Terraform::new();
    let moto = Moto::start();
    let aws = Aws::new(moto.url());
    seed_appliance_image(&aws);
    let tree = tf.copy_tree();
    let tag = format!("tf{}", std::process::id() % 100_000);

    let examples: [(&str, Inspect); 5] = [
        ("ha-subnet-router", inspect_ha_subnet_router),
        ("recorder", inspect_recorder),
        ("exit-node", inspect_exit_node),
        ("app-connector", inspect_app_connector),
        ("via6", inspect_via6),
    ];
    // The examples share moto but not names or state: run them side by side
    // (the recorder's apply alone waits ~55 s on S3 lifecycle polling).
    let outcomes: Vec<(String, std::thread::Result<Duration>)> = std::thread::scope(|s| {
        let handles: Vec<_> = examples
            .iter()
            .map(|(example, inspect)| {
                let dir = tree.path().join("examples").join(example);
                let name = format!("{tag}-{}", &example[..3]);
                let (tf, aws, moto_url) = (&tf, &aws, moto.url());
                let inspect = *inspect;
                s.spawn(move || {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let started = Instant::now();
                        exercise_example(tf, aws, moto_url, &dir, &name, inspect);
                        started.elapsed()
                    }))
                })
            })
            .collect();
        examples
            .iter()
            .zip(handles)
            .map(|((example, _), h)| {
                (
                    example.to_string(),
                    h.join().expect("the example thread itself panicked"),
                )
            })
            .collect()
    });
    let mut failures = Vec::new();
    for (example, outcome) in outcomes {
        match outcome {
            Ok(took) => eprintln!("example {example}: {:.0} s", took.as_secs_f64()),
            Err(panic) => failures.push(format!("example {example}: {}", panic_text(&panic))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn checkov_finds_no_unexplained_failure() {
    let checkov = checkov();
    let root = terraform_source();
    let ran = run(
        Command::new(&checkov)
            .args(["--directory", "."])
            .args(["--skip-download", "--compact", "--quiet"])
            .args(["--skip-path", r"\.terraform"])
            .current_dir(&root),
        Duration::from_secs(300),
    );
    assert!(
        !ran.stdout.contains("Parsing errors") && !ran.stderr.contains("Parsing errors"),
        "checkov could not parse part of terraform/: {ran}"
    );
    assert!(
        ran.success(),
        "checkov reports failed checks in terraform/ (fix them, or suppress one in the code with `#checkov:skip=CKV_…: reason`): {ran}"
    );
}

// ---------------------------------------------------------------------------
// One example, end to end

fn exercise_example(
    tf: &Terraform,
    aws: &Aws,
    moto_url: &str,
    dir: &Path,
    name: &str,
    inspect: Inspect,
) {
    let example = dir
        .file_name()
        .expect("an example directory")
        .to_string_lossy()
        .into_owned();
    fs::write(
        dir.join("moto_override.tf"),
        moto_override(moto_url, &example),
    )
    .expect("writing the moto override file");
    let auth_key = format!("tskey-{name}-not-for-user-data");
    let vars = [
        format!("name={name}"),
        format!("control_url={CONTROL_URL}"),
        format!("control_public_key={CONTROL_PUBLIC_KEY}"),
        format!("auth_key={auth_key}"),
    ];
    let var_args: Vec<String> = vars
        .iter()
        .flat_map(|v| ["-var".to_owned(), v.clone()])
        .collect();
    let with_vars = |args: &[&str]| -> Vec<String> {
        args.iter()
            .map(|a| (*a).to_owned())
            .chain(var_args.iter().cloned())
            .collect()
    };

    tf.run(dir, &["init"]).expect_success();
    let apply = tf.run_owned(dir, &with_vars(&["apply", "-auto-approve"]));
    if !apply.success() {
        // Leave moto tidy for the other examples' leftover checks.
        let _ = tf.run_owned(dir, &with_vars(&["destroy", "-auto-approve"]));
        panic!("apply failed: {apply}");
    }
    eprintln!("{example}: apply {:.0} s", apply.elapsed.as_secs_f64());
    let outputs: Value =
        serde_json::from_str(&tf.run(dir, &["output", "-json"]).expect_success().stdout)
            .expect("terraform output -json is JSON");
    let outputs = strip_output_values(&outputs);

    common_checks(aws, &outputs, name, &auth_key);
    inspect(aws, &outputs, name);
    assert_plan_settles(tf, dir, &with_vars(&["plan", "-out=settle.plan"]));

    if let Some(eni) = outputs["egress_interface_id"].as_str() {
        // moto leaves an interface that is not deleted on termination
        // attached to the terminated instance and refuses to detach it
        // (LastEniDetachError), where AWS detaches it at termination: take
        // the instance down first, then delete the interface as AWS would
        // let the provider, which then finds it gone.
        tf.run_owned(
            dir,
            &with_vars(&[
                "destroy",
                "-auto-approve",
                "-target=module.exit_node.aws_instance.this",
            ]),
        )
        .expect_success();
        aws.call(&[
            "ec2",
            "delete-network-interface",
            "--network-interface-id",
            eni,
        ])
        .expect_success();
    }
    let destroy = tf
        .run_owned(dir, &with_vars(&["destroy", "-auto-approve"]))
        .expect_success();
    eprintln!("{example}: destroy {:.0} s", destroy.elapsed.as_secs_f64());
    assert_nothing_tagged_left(aws, name, &outputs);
}

/// The checks every example shares: the appliance's instances, template,
/// security group, secret and role.
fn common_checks(aws: &Aws, outputs: &Value, name: &str, auth_key: &str) {
    let instance_ids = strings(&outputs["instance_ids"]);
    let mut args = vec!["ec2", "describe-instances", "--instance-ids"];
    args.extend(instance_ids.iter().map(String::as_str));
    let described = aws.json(&args);
    let instances: Vec<&Value> = described["Reservations"]
        .as_array()
        .expect("Reservations")
        .iter()
        .flat_map(|r| r["Instances"].as_array().expect("Instances"))
        .collect();
    assert_eq!(instances.len(), instance_ids.len(), "{described:#}");
    for instance in &instances {
        let id = instance["InstanceId"].as_str().unwrap_or_default();
        let meta = &instance["MetadataOptions"];
        assert_eq!(
            meta["HttpTokens"], "required",
            "{id}: IMDSv2 must be required"
        );
        assert_eq!(meta["HttpPutResponseHopLimit"], 1, "{id}: hop limit");
        assert_eq!(meta["HttpEndpoint"], "enabled", "{id}: metadata endpoint");
        assert!(
            instance.get("KeyName").is_none_or(Value::is_null),
            "{id}: has a key pair: {instance:#}"
        );
        assert_eq!(
            tag(instance, "causeway:deployment"),
            Some(name),
            "{id}: tags"
        );

        let itype = instance["InstanceType"].as_str().expect("InstanceType");
        let t = aws.json(&["ec2", "describe-instance-types", "--instance-types", itype]);
        let t = &t["InstanceTypes"][0];
        let arches = strings(&t["ProcessorInfo"]["SupportedArchitectures"]);
        assert!(
            arches.iter().any(|a| a == "arm64"),
            "{id}: {itype} is not arm64: {arches:?}"
        );
        assert_eq!(instance["Architecture"], "arm64", "{id}: architecture");
        assert_eq!(
            t["BurstablePerformanceSupported"], false,
            "{id}: {itype} is burstable"
        );
        assert_eq!(
            t["CurrentGeneration"], true,
            "{id}: {itype} is not current generation"
        );
    }

    let data = &latest_template_data(aws, outputs);
    assert_eq!(
        data["MetadataOptions"]["HttpTokens"], "required",
        "template IMDSv2: {data:#}"
    );
    assert_eq!(
        data["MetadataOptions"]["HttpPutResponseHopLimit"], 1,
        "template hop limit"
    );
    assert!(
        data.get("KeyName").is_none_or(Value::is_null),
        "template has a key pair: {data:#}"
    );
    let ebs = &data["BlockDeviceMappings"][0]["Ebs"];
    assert_eq!(ebs["VolumeType"], "gp3", "root volume type: {data:#}");
    assert_eq!(ebs["Encrypted"], true, "root volume encryption: {data:#}");
    let user_data = decode_base64(data["UserData"].as_str().expect("template UserData"));
    let secret_arn = outputs["auth_key_secret_arn"]
        .as_str()
        .expect("auth_key_secret_arn");
    assert!(
        user_data.contains(&format!("auth_key_secret = \"{secret_arn}\"")),
        "user data must name the secret: {user_data}"
    );
    assert!(
        !user_data.contains(auth_key) && !data.to_string().contains(auth_key),
        "the auth key leaked into the launch template: {user_data}"
    );
    let checked = check_config("launch-template", &user_data);
    assert!(
        checked.success(),
        "the appliance refuses the template's user data: {checked}\n{user_data}"
    );

    // The key reached Secrets Manager (write-only) under the contract's name.
    let secret = aws.json(&[
        "secretsmanager",
        "get-secret-value",
        "--secret-id",
        secret_arn,
    ]);
    assert_eq!(secret["SecretString"], auth_key, "secret value");
    let role = outputs["iam_role_name"].as_str().expect("iam_role_name");
    assert!(
        secret["Name"].as_str().is_some_and(|n| n.starts_with(&format!("causeway/{name}/")) && n.ends_with("-authkey")),
        "secret name: {secret:#}"
    );

    // The role may read exactly that secret.
    let policy = aws.json(&[
        "iam",
        "get-role-policy",
        "--role-name",
        role,
        "--policy-name",
        "causeway-auth-key",
    ]);
    let statements = statements(&policy["PolicyDocument"]);
    assert_eq!(statements.len(), 1, "auth-key policy: {policy:#}");
    assert_eq!(
        strings(&statements[0]["Action"]),
        ["secretsmanager:GetSecretValue"]
    );
    assert_eq!(strings(&statements[0]["Resource"]), [secret_arn]);

    // Only WireGuard in.
    let sg_id = outputs["security_group_id"]
        .as_str()
        .expect("security_group_id");
    {
        let sg = aws.json(&["ec2", "describe-security-groups", "--group-ids", sg_id]);
        let perms = sg["SecurityGroups"][0]["IpPermissions"]
            .as_array()
            .expect("IpPermissions");
        let inbound: BTreeSet<String> = perms.iter().flat_map(permission_lines).collect();
        assert_eq!(
            inbound,
            BTreeSet::from([
                "udp 41641-41641 from 0.0.0.0/0".to_owned(),
                "udp 41641-41641 from ::/0".to_owned()
            ]),
            "inbound rules: {sg:#}"
        );
    }
}

fn inspect_ha_subnet_router(aws: &Aws, outputs: &Value, _name: &str) {
    let ids = strings(&outputs["instance_ids"]);
    assert_eq!(ids.len(), 2, "an HA pair");
    let azs: BTreeSet<String> = strings(&outputs["availability_zones"])
        .into_iter()
        .collect();
    assert_eq!(azs.len(), 2, "two distinct AZs: {azs:?}");

    // The example runs without SNAT: no source/dest check, 100.64.0.0/10 ->
    // router 0.
    for id in &ids {
        assert_forwards(aws, id);
    }
    let rtb = outputs["route_table_id"].as_str().expect("route_table_id");
    let tables = aws.json(&["ec2", "describe-route-tables", "--route-table-ids", rtb]);
    let routes = tables["RouteTables"][0]["Routes"]
        .as_array()
        .expect("Routes");
    let tailnet: Vec<&Value> = routes
        .iter()
        .filter(|r| r["DestinationCidrBlock"] == "100.64.0.0/10")
        .collect();
    assert_eq!(tailnet.len(), 1, "one tailnet route: {routes:#?}");
    let eni = aws.json(&["ec2", "describe-instances", "--instance-ids", &ids[0]])["Reservations"]
        [0]["Instances"][0]["NetworkInterfaces"][0]["NetworkInterfaceId"]
        .clone();
    assert_eq!(
        tailnet[0]["NetworkInterfaceId"], eni,
        "the tailnet route points at router 0"
    );

    // The routers may point that route at themselves, in that table only.
    let role = outputs["iam_role_name"].as_str().expect("iam_role_name");
    let policy = aws.json(&[
        "iam",
        "get-role-policy",
        "--role-name",
        role,
        "--policy-name",
        "causeway-return-route",
    ]);
    let account = aws.json(&["sts", "get-caller-identity"])["Account"]
        .as_str()
        .expect("an account")
        .to_owned();
    let granted: BTreeSet<(Vec<String>, Vec<String>)> = statements(&policy["PolicyDocument"])
        .iter()
        .map(|s| {
            let mut actions = strings(&s["Action"]);
            actions.sort();
            (actions, strings(&s["Resource"]))
        })
        .collect();
    assert_eq!(
        granted,
        BTreeSet::from([
            (
                vec!["ec2:CreateRoute".to_owned(), "ec2:ReplaceRoute".to_owned()],
                vec![format!("arn:aws:ec2:us-east-1:{account}:route-table/{rtb}")]
            ),
            (
                vec!["ec2:DescribeRouteTables".to_owned()],
                vec!["*".to_owned()]
            ),
        ]),
        "return-route policy: {policy:#}"
    );

    // Split DNS through a Resolver inbound endpoint in both subnets.
    let split: &Value = &outputs["split_dns"];
    let (zone, ips) = split
        .as_object()
        .and_then(|m| m.iter().next())
        .expect("one split-DNS zone");
    assert!(zone.starts_with("internal."), "zone name: {zone}");
    assert_eq!(strings(ips).len(), 2, "two resolver addresses: {split:#}");
    let dns_sg = outputs["dns_security_group_id"]
        .as_str()
        .expect("dns_security_group_id");
    let sg = aws.json(&["ec2", "describe-security-groups", "--group-ids", dns_sg]);
    let inbound: BTreeSet<String> = sg["SecurityGroups"][0]["IpPermissions"]
        .as_array()
        .expect("IpPermissions")
        .iter()
        .flat_map(permission_lines)
        .collect();
    let expected: BTreeSet<String> = ["tcp", "udp"]
        .iter()
        .flat_map(|p| ["10.42.0.0/16", "100.64.0.0/10"].map(|c| format!("{p} 53-53 from {c}")))
        .collect();
    assert_eq!(inbound, expected, "DNS security group: {sg:#}");
}

/// The exit node: source/destination check off, an Elastic IP on its own
/// interface, and a second interface in the private subnet (device index
/// 1, check off, tagged) whose MAC the user data names; the NAT gateway's
/// address is what the outputs say third parties see.
fn inspect_exit_node(aws: &Aws, outputs: &Value, name: &str) {
    let ids = strings(&outputs["instance_ids"]);
    assert_eq!(ids.len(), 1, "one exit node");
    let id = ids[0].as_str();
    // The check lives on the interface (moto keeps a separate, stale copy
    // on the instance): the primary interface forwards.
    let described = aws.json(&["ec2", "describe-instances", "--instance-ids", id]);
    let primary = described["Reservations"][0]["Instances"][0]["NetworkInterfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["Attachment"]["DeviceIndex"] == 0)
        .unwrap_or_else(|| panic!("{id}: no primary interface: {described:#}"));
    assert_eq!(
        primary["SourceDestCheck"], false,
        "{id}: source/dest check: {primary:#}"
    );
    let primary_id = primary["NetworkInterfaceId"]
        .as_str()
        .expect("NetworkInterfaceId");

    let eni_id = outputs["egress_interface_id"]
        .as_str()
        .expect("egress_interface_id");
    let enis = aws.json(&[
        "ec2",
        "describe-network-interfaces",
        "--network-interface-ids",
        eni_id,
    ]);
    let eni = &enis["NetworkInterfaces"][0];
    assert_eq!(eni["SubnetId"], outputs["egress_subnet_id"], "{eni:#}");
    assert_eq!(eni["SourceDestCheck"], false, "{eni:#}");
    assert_eq!(eni["MacAddress"], outputs["egress_mac"], "{eni:#}");
    assert_eq!(eni["Attachment"]["InstanceId"], id, "{eni:#}");
    assert_eq!(eni["Attachment"]["DeviceIndex"], 1, "{eni:#}");
    let egress_tag = eni["TagSet"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["Key"] == "causeway:interface")
        .and_then(|t| t["Value"].as_str());
    assert_eq!(egress_tag, Some("egress"), "{eni:#}");

    let user_data = decode_base64(
        latest_template_data(aws, outputs)["UserData"]
            .as_str()
            .expect("UserData"),
    );
    let mac = outputs["egress_mac"].as_str().expect("egress_mac");
    assert!(
        user_data.contains(&format!(
            "[exit_node]\nipv6 = true\negress_mac = \"{mac}\"\n"
        )) && !user_data.contains("[subnet_router]"),
        "{user_data}"
    );

    let addresses = aws.json(&[
        "ec2",
        "describe-addresses",
        "--filters",
        &format!("Name=network-interface-id,Values={primary_id}"),
    ]);
    assert_eq!(
        strings(&outputs["public_ips"]),
        [addresses["Addresses"][0]["PublicIp"]
            .as_str()
            .unwrap_or("none")
            .to_owned()],
        "the Elastic IP is on the exit node: {addresses:#}"
    );
    assert_eq!(
        tag(&addresses["Addresses"][0], "causeway:deployment"),
        Some(name),
        "{addresses:#}"
    );

    let nat = outputs["nat_gateway_id"].as_str().expect("nat_gateway_id");
    let gateways = aws.json(&["ec2", "describe-nat-gateways", "--nat-gateway-ids", nat]);
    assert_eq!(
        gateways["NatGateways"][0]["NatGatewayAddresses"][0]["PublicIp"],
        outputs["egress_public_ip"],
        "{gateways:#}"
    );
}

/// The app connector: source/destination check off (it forwards to
/// whatever its domains resolve to), no tailnet return route, and user data
/// whose `[app_connector]` section is the one the provisioner writes for
/// the same domains.
fn inspect_app_connector(aws: &Aws, outputs: &Value, _name: &str) {
    let ids = strings(&outputs["instance_ids"]);
    assert_eq!(ids.len(), 1, "one app connector");
    let id = ids[0].as_str();
    assert_forwards(aws, id);
    let routes = aws.json(&[
        "ec2",
        "describe-route-tables",
        "--filters",
        &format!(
            "Name=vpc-id,Values={}",
            outputs["vpc_id"].as_str().expect("vpc_id")
        ),
    ]);
    assert!(
        !routes.to_string().contains("100.64.0.0/10"),
        "an app connector gets no tailnet return route: {routes:#}"
    );

    let user_data = decode_base64(
        latest_template_data(aws, outputs)["UserData"]
            .as_str()
            .expect("UserData"),
    );
    let domains = strings(&outputs["domains"]);
    assert!(!domains.is_empty(), "the example routes some domains");
    let provisioners = provisioner_connector_user_data(&domains);
    assert_eq!(
        app_connector_section(&user_data),
        app_connector_section(&provisioners),
        "the module's [app_connector] differs from the provisioner's:\n{user_data}\n---\n{provisioners}"
    );
    assert_eq!(
        app_connector_section(&user_data).get("domains"),
        Some(&serde_json::json!(domains)),
        "{user_data}"
    );
    assert!(
        !user_data.contains("[subnet_router]") && !user_data.contains("[exit_node]"),
        "{user_data}"
    );
}

/// The user data `deploy --cloud aws --role app-connector --domain …`
/// writes for `domains`.
fn provisioner_connector_user_data(domains: &[String]) -> String {
    use causeway_provisioner::aws::spec;
    spec::user_data(&spec::ApplianceConfig {
        role: Role::AppConnector,
        control_url: CONTROL_URL.into(),
        control_public_key: CONTROL_PUBLIC_KEY.into(),
        auth_key_secret: None,
        secrets_manager_endpoint: None,
        state_volume: None,
        routes: vec![],
        site_id: None,
        snat: true,
        aws_route_tables: vec![],
        recorder: None,
        egress_mac: None,
        app_connector: Some(spec::ConnectorData {
            domains: domains.to_vec(),
            max_routes: None,
            route_ttl_floor: None,
        }),
    })
    .expect("the provisioner's user data for an app connector")
}

/// The `[app_connector]` section of an appliance config, key by key. Both
/// the provisioner and the module write each value as JSON (a TOML basic
/// string, integer or array of strings is JSON too), so the values are read
/// as JSON and compared by meaning, not spacing.
fn app_connector_section(text: &str) -> std::collections::BTreeMap<String, Value> {
    let (_, body) = text
        .split_once("[app_connector]\n")
        .unwrap_or_else(|| panic!("no [app_connector] in {text}"));
    body.lines()
        .take_while(|l| !l.trim().is_empty() && !l.starts_with('['))
        .map(|l| {
            let (k, v) = l
                .split_once(" = ")
                .unwrap_or_else(|| panic!("not `key = value`: {l:?}"));
            let v: Value = serde_json::from_str(v).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            (k.to_owned(), v)
        })
        .collect()
}

fn inspect_via6(aws: &Aws, outputs: &Value, _name: &str) {
    let ids = strings(&outputs["instance_ids"]);
    assert_eq!(ids.len(), 1, "one 4via6 router");
    let routes = aws.json(&[
        "ec2",
        "describe-route-tables",
        "--filters",
        &format!(
            "Name=vpc-id,Values={}",
            outputs["vpc_id"].as_str().expect("vpc_id")
        ),
    ]);
    assert!(
        !routes.to_string().contains("100.64.0.0/10"),
        "a 4via6 router masquerades: no tailnet return route: {routes:#}"
    );

    let user_data = decode_base64(
        latest_template_data(aws, outputs)["UserData"]
            .as_str()
            .expect("UserData"),
    );
    let ranges = strings(&outputs["routes"]);
    let site = outputs["site_id"].as_u64().expect("site_id");
    let site = u16::try_from(site).expect("a 16-bit site ID");
    let provisioners = provisioner_via6_user_data(&ranges, site);
    let written = subnet_router_routes(&user_data);
    assert_eq!(
        written,
        subnet_router_routes(&provisioners),
        "the module's routes differ from the provisioner's:\n{user_data}\n---\n{provisioners}"
    );
    assert_eq!(written.len(), 1, "the VPC's one IPv4 range: {user_data}");
    assert_eq!(
        written[0].get("site_id"),
        Some(&serde_json::json!(site)),
        "{user_data}"
    );
    assert_eq!(
        outputs["approval_policy_key"].as_str(),
        Some(format!("site:{site}:{}", ranges[0]).as_str())
    );
    let ran = check_config("via6", &user_data);
    assert!(
        ran.success(),
        "the appliance refuses it: {ran}\n{user_data}"
    );
}

/// The user data `deploy --cloud aws --role via6 --site-id SITE` writes
/// for the ranges `routes`.
fn provisioner_via6_user_data(routes: &[String], site: u16) -> String {
    use causeway_provisioner::aws::spec;
    spec::user_data(&spec::ApplianceConfig {
        role: Role::Via6,
        control_url: CONTROL_URL.into(),
        control_public_key: CONTROL_PUBLIC_KEY.into(),
        auth_key_secret: None,
        secrets_manager_endpoint: None,
        state_volume: None,
        routes: routes.to_vec(),
        site_id: Some(site),
        snat: true,
        aws_route_tables: vec![],
        recorder: None,
        egress_mac: None,
        app_connector: None,
    })
    .expect("the provisioner's user data for a 4via6 router")
}

/// The routes of `[subnet_router]` in an appliance config, each key by
/// key (`{ prefix = "…", snat = true, site_id = 7 }`); values are read as
/// JSON, as in [`app_connector_section`].
fn subnet_router_routes(text: &str) -> Vec<std::collections::BTreeMap<String, Value>> {
    let (_, body) = text
        .split_once("[subnet_router]\nroutes = [\n")
        .unwrap_or_else(|| panic!("no [subnet_router] routes in {text}"));
    body.lines()
        .take_while(|l| l.trim() != "]")
        .map(|l| {
            let inner = l
                .trim()
                .strip_prefix("{ ")
                .and_then(|l| l.strip_suffix(" },"))
                .unwrap_or_else(|| panic!("not `{{ key = value, … }},`: {l:?}"));
            inner
                .split(", ")
                .map(|kv| {
                    let (k, v) = kv
                        .split_once(" = ")
                        .unwrap_or_else(|| panic!("not `key = value`: {kv:?}"));
                    let v: Value =
                        serde_json::from_str(v).unwrap_or_else(|e| panic!("{kv:?}: {e}"));
                    (k.to_owned(), v)
                })
                .collect()
        })
        .collect()
}

/// The instance's source/destination check is off, read from the instance
/// (moto leaves a single-interface instance's ENI flag at true).
fn assert_forwards(aws: &Aws, id: &str) {
    let attr = aws.json(&[
        "ec2",
        "describe-instance-attribute",
        "--instance-id",
        id,
        "--attribute",
        "sourceDestCheck",
    ]);
    assert_eq!(
        attr["SourceDestCheck"]["Value"], false,
        "{id}: source/dest check"
    );
}

/// The launch template's latest version's data (from `launch_template_id`).
fn latest_template_data(aws: &Aws, outputs: &Value) -> Value {
    let lt_id = outputs["launch_template_id"]
        .as_str()
        .expect("launch_template_id");
    let versions = aws.json(&[
        "ec2",
        "describe-launch-template-versions",
        "--launch-template-id",
        lt_id,
        "--versions",
        "$Latest",
    ]);
    versions["LaunchTemplateVersions"][0]["LaunchTemplateData"].clone()
}

fn inspect_recorder(aws: &Aws, outputs: &Value, _name: &str) {
    let ids = strings(&outputs["instance_ids"]);
    assert_eq!(ids.len(), 2, "two recorders");
    let azs: BTreeSet<String> = strings(&outputs["availability_zones"])
        .into_iter()
        .collect();
    assert_eq!(azs.len(), 2, "in two distinct AZs: {azs:?}");
    let hostnames = strings(&outputs["hostnames"]);
    assert!(
        hostnames.len() == 2 && hostnames.iter().all(|h| h.starts_with("ip-")),
        "each recorder's hostname, as it registers in control: {hostnames:?}"
    );
    let described = aws.json(&["ec2", "describe-instances", "--instance-ids", &ids[0]]);
    let itype = described["Reservations"][0]["Instances"][0]["InstanceType"]
        .as_str()
        .expect("type")
        .to_owned();
    let t = aws.json(&["ec2", "describe-instance-types", "--instance-types", &itype]);
    assert_eq!(
        t["InstanceTypes"][0]["VCpuInfo"]["DefaultVCpus"], 2,
        "size small is 2 vCPUs: {itype}"
    );
    let bucket = outputs["bucket_name"].as_str().expect("bucket_name");
    let lifecycle = aws.json(&[
        "s3api",
        "get-bucket-lifecycle-configuration",
        "--bucket",
        bucket,
    ]);
    let rules = lifecycle["Rules"].as_array().expect("Rules");
    assert_eq!(rules.len(), 1, "one lifecycle rule: {lifecycle:#}");
    let rule = &rules[0];
    assert_eq!(rule["ID"], "causeway-recordings");
    assert_eq!(rule["Status"], "Enabled");
    let transitions: BTreeSet<String> = rule["Transitions"]
        .as_array()
        .expect("Transitions")
        .iter()
        .map(|t| {
            format!(
                "{}@{}",
                t["StorageClass"].as_str().unwrap_or("?"),
                t["Days"]
            )
        })
        .collect();
    assert_eq!(
        transitions,
        BTreeSet::from(["STANDARD_IA@45".to_owned(), "GLACIER@120".to_owned()]),
        "transitions as configured: {rule:#}"
    );
    assert_eq!(
        rule["Expiration"]["Days"], 400,
        "expiry as configured: {rule:#}"
    );
    assert_eq!(
        rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"], 7,
        "{rule:#}"
    );
    assert!(
        rule.get("NoncurrentVersionExpiration").is_none(),
        "no other actions: {rule:#}"
    );

    let pab = aws.json(&["s3api", "get-public-access-block", "--bucket", bucket]);
    for flag in [
        "BlockPublicAcls",
        "IgnorePublicAcls",
        "BlockPublicPolicy",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(
            pab["PublicAccessBlockConfiguration"][flag], true,
            "{flag}: {pab:#}"
        );
    }
    let enc = aws.json(&["s3api", "get-bucket-encryption", "--bucket", bucket]);
    assert_eq!(
        enc["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
            ["SSEAlgorithm"],
        "AES256",
        "{enc:#}"
    );
    let policy = aws.json(&["s3api", "get-bucket-policy", "--bucket", bucket]);
    let policy: Value =
        serde_json::from_str(policy["Policy"].as_str().expect("Policy")).expect("policy JSON");
    assert!(
        statements(&policy)
            .iter()
            .any(|s| s["Effect"] == "Deny"
                && s["Condition"]["Bool"]["aws:SecureTransport"] == "false"),
        "TLS-only bucket policy: {policy:#}"
    );

    // The example turns the UI on: PutObject, AbortMultipartUpload,
    // GetBucketLocation, GetObject, ListBucket.
    let role = outputs["iam_role_name"].as_str().expect("iam_role_name");
    let names = aws.json(&["iam", "list-role-policies", "--role-name", role]);
    assert_eq!(
        strings(&names["PolicyNames"])
            .into_iter()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "causeway-auth-key".to_owned(),
            "causeway-recordings".to_owned()
        ])
    );
    let doc = aws.json(&[
        "iam",
        "get-role-policy",
        "--role-name",
        role,
        "--policy-name",
        "causeway-recordings",
    ]);
    let granted: BTreeSet<String> = statements(&doc["PolicyDocument"])
        .iter()
        .flat_map(|s| {
            let resources = strings(&s["Resource"]);
            strings(&s["Action"]).into_iter().flat_map(move |a| {
                resources
                    .iter()
                    .map(move |r| format!("{a} on {r}"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let arn = format!("arn:aws:s3:::{bucket}");
    let expected = BTreeSet::from([
        format!("s3:PutObject on {arn}/*"),
        format!("s3:AbortMultipartUpload on {arn}/*"),
        format!("s3:GetBucketLocation on {arn}"),
        format!("s3:GetObject on {arn}/*"),
        format!("s3:ListBucket on {arn}"),
    ]);
    assert_eq!(granted, expected, "recorder policy: {doc:#}");
}

/// A second plan changes nothing, apart from two kinds of moto drift
/// (moto stores these differently from AWS), each allowed only in its exact shape:
/// - an instance's `user_data` read back differs from what the provider
///   derives from the launch template: an update of `aws_instance` whose
///   only changed attribute is `user_data`;
/// - moto copies the launch template's own tags into its data as a
///   `launch-template` tag specification: an update of
///   `aws_launch_template` removing just that entry (plus the new version
///   numbers), the instance replacement that the new version forces, and
///   the tailnet route that follows the replaced instance's new ENI.
fn assert_plan_settles(tf: &Terraform, dir: &Path, plan_args: &[String]) {
    tf.run_owned(dir, plan_args).expect_success();
    let shown = tf
        .run(dir, &["show", "-json", "settle.plan"])
        .expect_success();
    let plan: Value = serde_json::from_str(&shown.stdout).expect("terraform show -json is JSON");
    let changes: Vec<&Value> = plan["resource_changes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            let actions = strings(&c["change"]["actions"]);
            actions != ["no-op"] && actions != ["read"]
        })
        .collect();
    let template_drift = changes.iter().any(|c| is_moto_template_tag_drift(c));
    let mut unexpected = Vec::new();
    for change in changes {
        let actions = strings(&change["change"]["actions"]);
        let address = change["address"].as_str().unwrap_or("?");
        let changed = changed_keys(&change["change"]["before"], &change["change"]["after"]);
        let user_data_drift =
            change["type"] == "aws_instance" && actions == ["update"] && changed == ["user_data"];
        let replaced_for_template = change["type"] == "aws_instance"
            && template_drift
            && change["change"]["replace_paths"]
                == serde_json::json!([["launch_template", 0, "version"]]);
        // The replaced instance gets a new ENI, so the tailnet route follows.
        let route_follows_replacement = change["type"] == "aws_route"
            && template_drift
            && actions == ["update"]
            && changed == ["network_interface_id"]
            && change["change"]["after_unknown"]["network_interface_id"] == true;
        if !(user_data_drift
            || replaced_for_template
            || route_follows_replacement
            || is_moto_template_tag_drift(change))
        {
            unexpected.push(format!(
                "{address}: {actions:?} {changed:?} {}",
                change["change"]["replace_paths"]
            ));
        }
    }
    assert!(
        unexpected.is_empty(),
        "a second plan wants changes:\n{}",
        unexpected.join("\n")
    );
}

fn is_moto_template_tag_drift(change: &Value) -> bool {
    if change["type"] != "aws_launch_template"
        || strings(&change["change"]["actions"]) != ["update"]
    {
        return false;
    }
    let (before, after) = (&change["change"]["before"], &change["change"]["after"]);
    let allowed = ["default_version", "latest_version", "tag_specifications"];
    if !changed_keys(before, after)
        .iter()
        .all(|k| allowed.contains(&k.as_str()))
    {
        return false;
    }
    let without_template_entry: Vec<&Value> = before["tag_specifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["resource_type"] != "launch-template")
        .collect();
    let after_specs: Vec<&Value> = after["tag_specifications"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    without_template_entry == after_specs
}

/// After destroy nothing tagged `causeway:deployment = name` is left, apart
/// from terminated instances (which EC2 keeps listing for a while).
fn assert_nothing_tagged_left(aws: &Aws, name: &str, outputs: &Value) {
    let filter = format!("Key=causeway:deployment,Values={name}");
    let tagged = aws.json(&[
        "resourcegroupstaggingapi",
        "get-resources",
        "--tag-filters",
        &filter,
    ]);
    // Terminated instances keep their tags for a while; any other state
    // counts as left. One filtered call rather than one per instance: moto
    // fails to describe a terminated instance whose extra interface was
    // deleted (see the exit node's destroy above).
    let live = aws.json(&[
        "ec2",
        "describe-instances",
        "--filters",
        "Name=instance-state-name,Values=pending,running,shutting-down,stopping,stopped",
    ]);
    let live: Vec<&str> = live["Reservations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["Instances"].as_array().into_iter().flatten())
        .filter_map(|i| i["InstanceId"].as_str())
        .collect();
    // Deleted NAT gateways stay listed (state "deleted") for a while, too.
    let gateways = aws.json(&[
        "ec2",
        "describe-nat-gateways",
        "--filter",
        "Name=state,Values=pending,available,deleting,failed",
    ]);
    let live_gateways: Vec<&str> = gateways["NatGateways"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["NatGatewayId"].as_str())
        .collect();
    let mut left = Vec::new();
    for arn in tagged["ResourceTagMappingList"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let arn = arn["ResourceARN"].as_str().unwrap_or_default();
        if let Some(id) = arn.split(":instance/").nth(1)
            && !live.contains(&id)
        {
            continue;
        }
        if let Some(id) = arn.split(":natgateway/").nth(1)
            && !live_gateways.contains(&id)
        {
            continue;
        }
        left.push(arn.to_owned());
    }
    let tag_filter = format!("Name=tag:causeway:deployment,Values={name}");
    for (what, args, key) in [
        (
            "security groups",
            vec!["ec2", "describe-security-groups", "--filters", &tag_filter],
            "SecurityGroups",
        ),
        (
            "launch templates",
            vec!["ec2", "describe-launch-templates", "--filters", &tag_filter],
            "LaunchTemplates",
        ),
        (
            "VPCs",
            vec!["ec2", "describe-vpcs", "--filters", &tag_filter],
            "Vpcs",
        ),
        (
            "subnets",
            vec!["ec2", "describe-subnets", "--filters", &tag_filter],
            "Subnets",
        ),
    ] {
        let found = aws.json(&args);
        for item in found[key].as_array().into_iter().flatten() {
            left.push(format!("{what}: {item}"));
        }
    }
    let running = aws.json(&[
        "ec2",
        "describe-instances",
        "--filters",
        &tag_filter,
        "Name=instance-state-name,Values=pending,running,stopping,stopped",
    ]);
    for r in running["Reservations"].as_array().into_iter().flatten() {
        left.push(format!("instances: {r}"));
    }
    let role = outputs["iam_role_name"].as_str().expect("iam_role_name");
    if aws
        .call(&["iam", "get-role", "--role-name", role])
        .success()
    {
        left.push(format!("IAM role {role}"));
    }
    let secret = outputs["auth_key_secret_arn"]
        .as_str()
        .expect("auth_key_secret_arn");
    if aws
        .call(&["secretsmanager", "get-secret-value", "--secret-id", secret])
        .success()
    {
        left.push(format!("secret {secret}"));
    }
    if let Some(bucket) = outputs["bucket_name"].as_str()
        && aws
            .call(&["s3api", "head-bucket", "--bucket", bucket])
            .success()
    {
        left.push(format!("bucket {bucket}"));
    }
    assert!(
        left.is_empty(),
        "left behind after destroy:\n{}",
        left.join("\n")
    );
}

// ---------------------------------------------------------------------------
// moto fixtures

/// The provider pointed at moto, and the example's moto drift worked
/// around here rather than in the modules.
fn moto_override(url: &str, example: &str) -> String {
    let services = [
        "ec2",
        "s3",
        "secretsmanager",
        "iam",
        "sts",
        "ssm",
        "autoscaling",
        "route53",
        "route53resolver",
        "resourcegroupstaggingapi",
    ];
    let endpoints: String = services
        .iter()
        .map(|s| format!("    {s} = \"{url}\"\n"))
        .collect();
    let mut text = format!(
        r#"# Generated by tests/tests/terraform.rs: the provider against moto.
provider "aws" {{
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true
  # moto's single-process server drops idle keep-alive connections under
  # load ("use of closed network connection"); let the SDK retry those.
  max_retries                 = 5
  endpoints {{
{endpoints}  }}
}}
"#
    );
    if example == "ha-subnet-router" {
        // moto returns a zone created with a vpc block as public, so the
        // provider would try to associate the VPC again on every plan.
        text.push_str(
            r#"
resource "aws_route53_zone" "internal" {
  lifecycle {
    ignore_changes = [vpc]
  }
}
"#,
        );
    }
    text
}

/// An arm64 image owned by the account and tagged as the appliance image,
/// as the image pipeline would leave it. moto's register-image ignores the
/// architecture, so the image is a copy of one of moto's arm64 images.
fn seed_appliance_image(aws: &Aws) {
    let images = aws.json(&[
        "ec2",
        "describe-images",
        "--filters",
        "Name=architecture,Values=arm64",
        "Name=root-device-type,Values=ebs",
    ]);
    let source = images["Images"][0]["ImageId"]
        .as_str()
        .unwrap_or_else(|| panic!("moto lists no arm64 image: {images:#}"));
    let copy = aws.json(&[
        "ec2",
        "copy-image",
        "--source-image-id",
        source,
        "--source-region",
        "us-east-1",
        "--name",
        "causeway-appliance-arm64-test",
    ]);
    let id = copy["ImageId"]
        .as_str()
        .expect("copy-image returns ImageId");
    aws.call(&[
        "ec2",
        "create-tags",
        "--resources",
        id,
        "--tags",
        "Key=causeway:image,Value=appliance",
        "Key=causeway:arch,Value=arm64",
    ])
    .expect_success();
}

// ---------------------------------------------------------------------------
// Tools

/// terraform with a CLI config that installs providers only from the
/// filesystem mirror.
struct Terraform {
    bin: PathBuf,
    config_dir: tempfile::TempDir,
}

impl Terraform {
    fn new() -> Self {
        let bin = which("terraform").unwrap_or_else(|| {
            panic!("terraform is missing from PATH: these tests need terraform >= 1.11 (it comes with the machine image, not from a package registry)")
        });
        let mirror = std::env::var_os("CAUSEWAY_TF_MIRROR")
            .map_or_else(|| PathBuf::from("/opt/tf-plugins"), PathBuf::from);
        let provider = mirror.join("registry.terraform.io/hashicorp/aws");
        assert!(
            provider.is_dir(),
            "the hashicorp/aws provider mirror is missing: expected {} (set CAUSEWAY_TF_MIRROR to the folder holding registry.terraform.io)",
            provider.display()
        );
        let config_dir = tempfile::tempdir().expect("a temporary directory");
        let config = format!(
            r#"provider_installation {{
  filesystem_mirror {{
    path    = "{}"
    include = ["registry.terraform.io/hashicorp/*"]
  }}
  direct {{ exclude = ["registry.terraform.io/*/*"] }}
}}
"#,
            mirror.display()
        );
        fs::write(config_dir.path().join("cli.tfrc"), config)
            .expect("writing the terraform CLI config");
        Self { bin, config_dir }
    }

    /// A copy of `terraform/` (sources only) to run in.
    fn copy_tree(&self) -> tempfile::TempDir {
        let dest = tempfile::tempdir().expect("a temporary directory");
        copy_sources(&terraform_source(), dest.path());
        dest
    }

    /// Applies `config` (pure modules and outputs, no provider) in a
    /// temporary root and returns `terraform output -json`.
    fn render_offline(&self, config: &str) -> Value {
        let root = tempfile::tempdir().expect("a temporary directory");
        fs::write(root.path().join("main.tf"), config).expect("writing the rendering config");
        self.run(root.path(), &["init", "-backend=false"])
            .expect_success();
        self.run(root.path(), &["apply", "-auto-approve"])
            .expect_success();
        serde_json::from_str(
            &self
                .run(root.path(), &["output", "-json"])
                .expect_success()
                .stdout,
        )
        .expect("terraform output -json is JSON")
    }

    fn run(&self, dir: &Path, args: &[&str]) -> Ran {
        let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.run_owned(dir, &owned)
    }

    fn run_owned(&self, dir: &Path, args: &[String]) -> Ran {
        run(
            Command::new(&self.bin)
                .args(args)
                .arg("-no-color")
                .current_dir(dir)
                .env(
                    "TF_CLI_CONFIG_FILE",
                    self.config_dir.path().join("cli.tfrc"),
                )
                .env("TF_IN_AUTOMATION", "1")
                .env("TF_INPUT", "0")
                .env("CHECKPOINT_DISABLE", "1")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env_remove("TF_PLUGIN_CACHE_DIR"),
            TF_TIMEOUT,
        )
    }
}

/// The aws CLI against moto, JSON out, no retries.
struct Aws {
    bin: PathBuf,
    url: String,
}

impl Aws {
    fn new(url: &str) -> Self {
        let bin = which("aws").unwrap_or_else(|| {
            panic!("the aws CLI is missing from PATH: install it with `pip install awscli`")
        });
        Self {
            bin,
            url: url.to_owned(),
        }
    }

    fn call(&self, args: &[&str]) -> Ran {
        run(
            Command::new(&self.bin)
                .args(args)
                .args(["--output", "json"])
                .env("AWS_ENDPOINT_URL", &self.url)
                .envs(CLIENT_ENV)
                .env("AWS_MAX_ATTEMPTS", "1")
                .env("AWS_PAGER", ""),
            AWS_TIMEOUT,
        )
    }

    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let ran = self.call(args).expect_success();
        if ran.stdout.trim().is_empty() {
            return Value::Null;
        }
        serde_json::from_str(&ran.stdout)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", ran.command, ran.stdout))
    }
}

fn checkov() -> PathBuf {
    let candidates = [
        std::env::var_os("CHECKOV").map(PathBuf::from),
        Some(PathBuf::from("/opt/checkov-venv/bin/checkov")),
        which("checkov"),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "checkov is missing: install it into its own venv with \
             `python3 -m venv /opt/checkov-venv && /opt/checkov-venv/bin/pip install checkov` \
             (or set CHECKOV to its path)"
            )
        })
}

// ---------------------------------------------------------------------------
// Small helpers

fn terraform_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .join("terraform")
}

/// Copies `.tf`, `.hcl` and `.md` files, leaving out `.terraform/`, state
/// and lock files.
fn copy_sources(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())) {
        let entry = entry.expect("a directory entry");
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != ".terraform" {
                let sub = to.join(&name);
                fs::create_dir_all(&sub).expect("creating a directory in the copy");
                copy_sources(&path, &sub);
            }
        } else if [".tf", ".hcl", ".md"].iter().any(|ext| name.ends_with(ext))
            && name != ".terraform.lock.hcl"
        {
            fs::copy(&path, to.join(&name))
                .unwrap_or_else(|e| panic!("copying {}: {e}", path.display()));
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// `terraform output -json` wraps each value in `{ "value": …, "type": … }`.
fn strip_output_values(outputs: &Value) -> Value {
    Value::Object(
        outputs
            .as_object()
            .expect("outputs object")
            .iter()
            .map(|(k, v)| (k.clone(), v["value"].clone()))
            .collect(),
    )
}

/// A string or an array of strings, as IAM and the CLI write them.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn statements(policy: &Value) -> Vec<Value> {
    match &policy["Statement"] {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        one => vec![one.clone()],
    }
}

fn tag<'a>(resource: &'a Value, key: &str) -> Option<&'a str> {
    resource["Tags"]
        .as_array()?
        .iter()
        .find(|t| t["Key"] == key)
        .and_then(|t| t["Value"].as_str())
}

/// One line per (protocol, ports, source) of an EC2 IpPermission.
fn permission_lines(p: &Value) -> Vec<String> {
    let proto = p["IpProtocol"].as_str().unwrap_or("?");
    let ports = format!("{}-{}", p["FromPort"], p["ToPort"]);
    let v4 = p["IpRanges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["CidrIp"].as_str());
    let v6 = p["Ipv6Ranges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["CidrIpv6"].as_str());
    v4.chain(v6)
        .map(|cidr| format!("{proto} {ports} from {cidr}"))
        .collect()
}

fn changed_keys(before: &Value, after: &Value) -> Vec<String> {
    let (Some(b), Some(a)) = (before.as_object(), after.as_object()) else {
        return vec!["<whole resource>".to_owned()];
    };
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| k.to_string())
        .collect()
}

fn decode_base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("not base64: {text}"));
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(non-string panic)".to_owned())
}
