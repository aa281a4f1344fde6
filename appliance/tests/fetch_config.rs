//! `appliance fetch-config --from aws-imds`: a machine image's first step.
//! Good user data is fetched over IMDSv2 (a token first; the fake refuses
//! any read without one), validated and written whole; missing or invalid
//! user data exits 1 naming what is wrong and leaves the output untouched.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use causeway_test_support::FakeImds;

const ROUTER: &str = r#"state_dir = "/var/lib/causeway"
[node]
control_url = "http://198.18.0.2:8080"
control_public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
auth_key_secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:causeway/prod/subnet-router-authkey-AbCdEf"
cloud = "aws"
[subnet_router]
routes = [{ prefix = "198.19.1.0/24" }]
"#;

fn fetch(imds: &FakeImds, output: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["fetch-config", "--from", "aws-imds", "--output"])
        .arg(output)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .output()
        .expect("run appliance")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn good_user_data_is_written_whole_after_an_imdsv2_token() {
    let imds = FakeImds::start();
    imds.set("user-data", Some(ROUTER));
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("appliance.toml");

    let out = fetch(&imds, &output);

    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("written; roles: device, subnet-router"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        std::fs::read_to_string(&output).expect("the config"),
        ROUTER
    );
    let mode = std::fs::metadata(&output)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = imds.log();
    assert!(log.contains("PUT /latest/api/token 200"), "{log}");
    assert!(log.contains("GET /latest/user-data 200"), "{log}");
    // Nothing else is left beside it (the temporary file was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["appliance.toml"]);
}

#[test]
fn missing_user_data_fails_and_writes_nothing() {
    let imds = FakeImds::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("appliance.toml");
    std::fs::write(&output, "previous").expect("an earlier config");

    let out = fetch(&imds, &output);

    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("EC2 user data") && stderr.contains("launched without any"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&output).expect("kept"), "previous");
}

#[test]
fn invalid_user_data_names_the_key_and_writes_nothing() {
    let imds = FakeImds::start();
    imds.set(
        "user-data",
        Some(&ROUTER.replace("control_url", "contrl_url")),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("appliance.toml");

    let out = fetch(&imds, &output);

    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("EC2 user data") && stderr.contains("contrl_url"),
        "{stderr}"
    );
    assert!(!output.exists(), "wrote {}", output.display());
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("list").count(),
        0,
        "left a file behind"
    );
}

#[test]
fn no_metadata_service_is_an_error_naming_imds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("appliance.toml");
    // A port nothing listens on.
    let port = causeway_test_support::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["fetch-config", "--from", "aws-imds", "--output"])
        .arg(&output)
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .output()
        .expect("run appliance");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("EC2 user data: asking IMDSv2"),
        "{}",
        text(&out.stderr)
    );
    assert!(!output.exists());
}
