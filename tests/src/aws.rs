//! The AWS API on moto for end-to-end tests: moto runs in control's
//! namespace (nodes on the public bridge reach it at `CONTROL_ADDR`, the
//! provisioner and the AWS CLI at loopback), a VPC made with the AWS CLI,
//! `provisioner … --cloud aws` against it, and the user data `deploy` wrote
//! into a launch template.

use std::time::Duration;

use base64::Engine;
use causeway_provisioner::local::Site;
use causeway_test_support::{CLIENT_ENV, Moto};

use crate::local::topology::CONTROL_ADDR;
use crate::{Ran, TestDeployment, binary, run};

/// moto's port, inside control's namespace on every address.
pub const MOTO_PORT: u16 = 5000;

/// moto in control's namespace (its log in the deployment's directory),
/// and what `provisioner deploy` needs to point instances at the
/// deployment's control: its node-facing URL and public key.
pub struct MotoBesideControl {
    /// Stops moto when dropped.
    pub moto: Moto,
    /// `http://CONTROL_ADDR:8080`.
    pub control_url: String,
    /// Control's public key (base64).
    pub control_key: String,
}

/// Starts moto beside the deployment's control.
pub fn moto_beside_control(t: &TestDeployment) -> MotoBesideControl {
    let ctl = t.dep().netns(Site::Ctl);
    let moto = Moto::options()
        .listen("0.0.0.0", MOTO_PORT)
        .log_to(&t.dep().paths().root().join("moto.log"))
        .inside(move |program| ctl.command(program))
        .start();
    let control_key = std::fs::read_to_string(t.dep().paths().control_pub())
        .expect("control's public key")
        .trim()
        .to_owned();
    MotoBesideControl {
        moto,
        control_url: format!("http://{CONTROL_ADDR}:8080"),
        control_key,
    }
}

/// The user data of the deployment's launch template for `role`
/// (`causeway-NAME-ROLE`, latest version), decoded.
pub fn launch_template_user_data(t: &TestDeployment, role: &str) -> String {
    let template = aws(
        t,
        &[
            "ec2",
            "describe-launch-template-versions",
            "--launch-template-name",
            &format!("causeway-{}-{role}", t.name()),
            "--versions",
            "$Latest",
            "--query",
            "LaunchTemplateVersions[0].LaunchTemplateData.UserData",
        ],
    );
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(&template)
            .expect("user data is base64"),
    )
    .expect("user data is text")
}

/// A VPC with two public subnets in two AZs and an arm64 appliance image,
/// made with the AWS CLI; returns the VPC id.
pub fn public_vpc(t: &TestDeployment) -> String {
    let vpc = aws(
        t,
        &[
            "ec2",
            "create-vpc",
            "--cidr-block",
            "10.0.0.0/16",
            "--query",
            "Vpc.VpcId",
        ],
    );
    let igw = aws(
        t,
        &[
            "ec2",
            "create-internet-gateway",
            "--query",
            "InternetGateway.InternetGatewayId",
        ],
    );
    aws(
        t,
        &[
            "ec2",
            "attach-internet-gateway",
            "--internet-gateway-id",
            &igw,
            "--vpc-id",
            &vpc,
        ],
    );
    let table = aws(
        t,
        &[
            "ec2",
            "create-route-table",
            "--vpc-id",
            &vpc,
            "--query",
            "RouteTable.RouteTableId",
        ],
    );
    aws(
        t,
        &[
            "ec2",
            "create-route",
            "--route-table-id",
            &table,
            "--destination-cidr-block",
            "0.0.0.0/0",
            "--gateway-id",
            &igw,
        ],
    );
    for (cidr, az) in [("10.0.1.0/24", "us-east-1a"), ("10.0.2.0/24", "us-east-1b")] {
        let subnet = aws(
            t,
            &[
                "ec2",
                "create-subnet",
                "--vpc-id",
                &vpc,
                "--cidr-block",
                cidr,
                "--availability-zone",
                az,
                "--query",
                "Subnet.SubnetId",
            ],
        );
        aws(
            t,
            &[
                "ec2",
                "associate-route-table",
                "--route-table-id",
                &table,
                "--subnet-id",
                &subnet,
            ],
        );
    }
    let image = aws(
        t,
        &[
            "ec2",
            "register-image",
            "--name",
            "causeway-appliance-arm64",
            "--architecture",
            "arm64",
            "--root-device-name",
            "/dev/xvda",
            "--query",
            "ImageId",
        ],
    );
    aws(
        t,
        &[
            "ec2",
            "create-tags",
            "--resources",
            &image,
            "--tags",
            "Key=causeway:image,Value=appliance",
            "Key=causeway:arch,Value=arm64",
        ],
    );
    vpc
}

/// `aws ARGS…` against moto in control's namespace.
pub fn aws_cli(t: &TestDeployment, args: &[&str]) -> Ran {
    let mut cmd = t.command_in(Site::Ctl, "aws");
    cmd.args(["--endpoint-url", &format!("http://127.0.0.1:{MOTO_PORT}")])
        .args(["--output", "text"])
        .args(args)
        .envs(CLIENT_ENV);
    run(&mut cmd, Duration::from_secs(60))
}

/// Like [`aws_cli`], which must succeed; its trimmed output.
pub fn aws(t: &TestDeployment, args: &[&str]) -> String {
    aws_cli(t, args).expect_success().stdout.trim().to_owned()
}

/// `provisioner ARGS… --cloud aws` for the test's deployment, in control's
/// namespace, against moto and control's admin API.
pub fn provisioner(t: &TestDeployment, args: &[&str]) -> Ran {
    let mut cmd = t.command_in(Site::Ctl, binary("provisioner"));
    cmd.args(args)
        .args(["--cloud", "aws", "--name", &t.name()])
        .args(["--control-admin-url", "http://127.0.0.1:8081"])
        .arg("--control-admin-token-file")
        .arg(t.dep().paths().admin_token())
        .envs(CLIENT_ENV)
        .env(
            "CAUSEWAY_AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{MOTO_PORT}"),
        );
    run(&mut cmd, Duration::from_secs(120))
}
