//! What the provisioner's tests share: an SDK config for moto, the
//! provisioner command with the environment every run needs, how a
//! failed run is shown, and the check that a local deployment left nothing.

#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Command, Output};

use causeway_test_support::{CLIENT_ENV, REGION, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};

/// A current-thread runtime for the SDK calls a test makes itself.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The SDK config for moto at `url`: test credentials, the test region, no
/// retries (moto's 500s for unimplemented calls would be retried).
pub fn moto_config(rt: &tokio::runtime::Runtime, url: &str) -> aws_config::SdkConfig {
    rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(url)
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                TEST_ACCESS_KEY_ID,
                TEST_SECRET_ACCESS_KEY,
                None,
                None,
                "test",
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load(),
    )
}

/// An S3 client for moto, which needs path-style addressing.
pub fn s3(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(config)
            .force_path_style(true)
            .build(),
    )
}

/// The provisioner binary, pointed at `endpoint` with test credentials, one
/// attempt per AWS call, and nothing from the host's AWS profile.
pub fn provisioner(endpoint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_provisioner"));
    cmd.envs(CLIENT_ENV)
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("CAUSEWAY_AWS_ENDPOINT_URL", endpoint)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_PROFILE");
    cmd
}

/// A run's output, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that nothing of local deployment `name` is left after a
/// destroy: no namespace `cw-NAME-…` and no interface of that name in the
/// host namespace.
pub fn assert_no_local_leftovers(name: &str) {
    let prefix = format!("cw-{name}-");
    let left = causeway_provisioner::local::Netns::list().expect("ip netns list");
    assert!(!left.iter().any(|n| n.starts_with(&prefix)), "{left:?}");
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&prefix), "{links}");
}
