//! `appliance check-config`: a valid file is reported with its roles and
//! exit 0; a bad one exits 1 naming the file and the offending key, and
//! nothing is started (no state directory is created).

use std::process::Command;

fn check(text: &str) -> (bool, String, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("appliance.toml");
    std::fs::write(
        &path,
        text.replace("STATE", &dir.path().join("state").display().to_string()),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run appliance");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        dir,
    )
}

const ROUTER: &str = r#"
state_dir = "STATE"
[node]
control_url = "http://198.18.0.2:8080"
control_public_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
[subnet_router]
routes = [{ prefix = "198.19.1.0/24" }]
"#;

#[test]
fn a_valid_config_is_reported_with_its_roles() {
    let (ok, stdout, stderr, dir) = check(ROUTER);
    assert!(ok, "stderr: {stderr}");
    assert!(
        stdout.contains("valid; roles: device, subnet-router"),
        "{stdout}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "check-config created state"
    );
}

#[test]
fn a_bad_config_names_the_key_and_fails() {
    let (ok, _, stderr, dir) = check(&ROUTER.replace("control_url", "contrl_url"));
    assert!(!ok);
    assert!(
        stderr.contains("appliance.toml") && stderr.contains("contrl_url"),
        "{stderr}"
    );
    assert!(!dir.path().join("state").exists());

    let (ok, _, stderr, _dir) = check(&ROUTER.replace("198.19.1.0/24", "198.19.1.9/24"));
    assert!(!ok);
    assert!(
        stderr.contains("198.19.1.9/24") && stderr.contains("host bits"),
        "{stderr}"
    );
}
