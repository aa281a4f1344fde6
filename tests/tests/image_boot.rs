//! The x86_64 image, built by `provisioner image build` with the
//! workspace's debug appliance, booted under QEMU (TCG, no KVM) as an EC2
//! instance: its NICs are taps on bridges in a namespace that plays the
//! VPC (DHCP from dnsmasq, a 1:1 NAT to a public address on the
//! deployment's bridge, as an internet gateway does), and a fake IMDSv2 at
//! 169.254.169.254 serves the user data `provisioner deploy --cloud aws`
//! wrote into a launch template on moto, the instance's host name and
//! public address, and role credentials.
//!
//! The image's own unit, unmodified, does the rest: first with missing and
//! then with bad user data it fails with a console line naming what is
//! wrong and never starts the appliance; once the user data is right it
//! fetches the config, reads the auth key from Secrets Manager on moto
//! (`node.secrets_manager_endpoint`, which `deploy` wrote), registers with
//! control, and a client device reaches the VPC's HTTP server through the
//! VM, control's primary router for the subnet.
//!
//! Prints the image size and boot-to-ready times (docs/benchmarks.md).
//! Needs root, KVM-less QEMU (`qemu-system-x86`), dnsmasq, the image
//! build's packages (`.ci/install-deps`) and `cargo build --workspace
//! --bins` first.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use causeway_e2e::aws::{
    MOTO_PORT, MotoBesideControl, launch_template_user_data, moto_beside_control, provisioner,
    public_vpc,
};
use causeway_e2e::local::Site;
use causeway_e2e::local::netns::Netns;
use causeway_e2e::local::topology::CONTROL_ADDR;
use causeway_e2e::{TestDeployment, VPC_SUBNET, binary, run};
use causeway_test_support::FakeImds;
use serde_json::Value;

/// The instance's public address on the deployment's bridge (1:1 NAT).
const PUBLIC_ADDR: &str = "198.18.0.70";
/// The instance's subnet, its gateway (the namespace) and the address
/// dnsmasq leases to the first NIC.
const SUBNET_GATEWAY: &str = "198.19.2.1/24";
const PRIVATE_ADDR: &str = "198.19.2.10";
/// The second NIC, on the VPC subnet of the HTTP server: the address the
/// local router had there.
const VPC_NIC_ADDR: &str = "198.19.1.1";
/// The namespace's own address on the VPC subnet (dnsmasq serves there).
const VPC_BRIDGE_ADDR: &str = "198.19.1.2/24";
const MAC_SUBNET: &str = "52:54:00:19:02:0a";
const MAC_VPC: &str = "52:54:00:19:01:01";
/// EC2's link-local metadata address.
const IMDS_ADDR: &str = "169.254.169.254";
/// Boot under TCG on a shared machine: about 100 s, with margin.
const BOOT_TIMEOUT: Duration = Duration::from_secs(360);
/// From a change of user data to the unit's next start (RestartSec=5s).
const RESTART_TIMEOUT: Duration = Duration::from_secs(60);
/// How much larger than the image the instance's root volume is.
const GROWN_BY_MIB: u64 = 512;
/// Control's state volume in the test (EBS's smallest is 1 GiB).
const STATE_VOLUME_MIB: u64 = 128;
/// Control's admin API port, opened to the test for the second boot.
const CONTROL_ADMIN_PORT: u16 = 8081;

#[test]
fn the_image_boots_from_imds_user_data_and_routes_a_client_to_the_vpc() {
    let build_started = Instant::now();
    let image = build_image();
    let build_secs = build_started.elapsed().as_secs_f64();
    let raw = image.path().join("disk.raw");
    let raw_meta = std::fs::metadata(&raw).expect("disk.raw");
    // The instance's root volume is larger than the image, as an EC2 root
    // volume of any size is: first boot grows the root partition and its
    // file system over the rest.
    let volume = image.path().join("root-volume.raw");
    run(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(&raw)
            .arg(&volume),
        Duration::from_secs(120),
    )
    .expect_success();
    let volume_bytes = raw_meta.len() + (GROWN_BY_MIB << 20);
    std::fs::File::options()
        .write(true)
        .open(&volume)
        .and_then(|f| f.set_len(volume_bytes))
        .expect("growing the root volume");
    let image_root = root_partition(&raw).expect("the image's root partition");

    let mut t = TestDeployment::deploy();
    let root = t.dep().paths().root().to_owned();
    // The VM takes over the local router's subnet (and its VPC link).
    t.process("router").stop(Duration::from_secs(10));
    let MotoBesideControl {
        moto,
        control_url,
        control_key,
    } = moto_beside_control(&t);
    let vpc = public_vpc(&t);
    // The instance reaches Secrets Manager (moto) at an endpoint of its own,
    // as it would a VPC interface endpoint without private DNS.
    let secrets_endpoint = format!("http://{CONTROL_ADDR}:{MOTO_PORT}");
    provisioner(
        &t,
        &[
            "deploy",
            "--role",
            "subnet-router",
            "--vpc",
            &vpc,
            "--route",
            VPC_SUBNET,
            "--control-url",
            &control_url,
            "--control-public-key",
            &control_key,
            "--secrets-manager-endpoint",
            &secrets_endpoint,
            "--health-timeout",
            "0",
        ],
    )
    .expect_success();
    let status = provisioner(&t, &["status", "--output", "json"]);
    let status: Value = serde_json::from_str(&status.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {status}"));
    let hostname = status["instances"][0]["hostname"]
        .as_str()
        .unwrap_or_else(|| panic!("no instance in {status}"))
        .to_owned();
    let user_data = launch_template_user_data(&t, "subnet-router");
    assert!(
        user_data.contains(&format!("secrets_manager_endpoint = {secrets_endpoint:?}")),
        "{user_data}"
    );

    let vm = t.add_bridge_namespace("vm", &format!("{PUBLIC_ADDR}/24"));
    wire_the_vpc(&t, &vm);
    let imds = FakeImds::inside(|program| vm.command(program), IMDS_ADDR, 80);
    imds.set("local-hostname", Some(&format!("{hostname}.ec2.internal")));
    imds.set("public-ipv4", Some(PUBLIC_ADDR));
    imds.set("region", Some(causeway_test_support::REGION));
    imds.set("role", Some("causeway-appliance"));
    // First boot with no user data at all (the failure path).
    imds.set("user-data", None);

    let mut dnsmasq = vm.command("dnsmasq");
    dnsmasq
        .args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
        .args([
            "--user=root",
            "--group=root",
            "--pid-file=",
            "--log-facility=-",
        ])
        .args([
            "--bind-interfaces",
            "--interface=br-subnet",
            "--interface=br-vpc",
        ])
        .args(["--dhcp-authoritative", "--log-dhcp"])
        .arg(format!(
            "--dhcp-leasefile={}",
            root.join("dnsmasq.leases").display()
        ))
        .arg("--dhcp-range=set:subnet,198.19.2.0,static,255.255.255.0,1h")
        .arg("--dhcp-range=set:vpc,198.19.1.0,static,255.255.255.0,1h")
        .arg(format!("--dhcp-host={MAC_SUBNET},{PRIVATE_ADDR}"))
        .arg(format!("--dhcp-host={MAC_VPC},{VPC_NIC_ADDR}"))
        // One default route: through the subnet's gateway, not the VPC NIC.
        .arg("--dhcp-option=tag:vpc,option:router");
    t.spawn_recorded(
        "dnsmasq",
        vm.name(),
        &mut dnsmasq,
        &root.join("dnsmasq.log"),
    );

    let (console, qmp) = start_vm(&t, &vm, "qemu", &volume, None);

    // Missing user data: the unit fails naming it; nothing registers.
    console.wait_for(
        BOOT_TIMEOUT,
        "error: EC2 user data: this instance was launched without any",
    );
    let first_start_secs = console.started.elapsed().as_secs_f64();
    assert_not_registered(&t, &hostname);
    // Bad user data: the unit's next start fails naming the parse error.
    imds.set(
        "user-data",
        Some("[node]\ncontrol_url = http://no-quotes\n"),
    );
    console.wait_for(RESTART_TIMEOUT, "error: parsing EC2 user data");
    assert_not_registered(&t, &hostname);

    // The launch template's user data: the next start fetches it.
    imds.set("user-data", Some(&user_data));
    let fixed = Instant::now();
    let node = console.wait(
        RESTART_TIMEOUT + Duration::from_secs(60),
        "the appliance to register",
        || node_online(&t, &hostname),
    );
    let registered_secs = fixed.elapsed().as_secs_f64();
    println!(
        "image boot: QEMU start -> the unit's first start (its error on the console): {first_start_secs:.1} s; good user data served -> registered with control: {registered_secs:.1} s"
    );
    let endpoints = node["endpoints"].to_string();
    assert!(
        endpoints.contains(&format!("{PUBLIC_ADDR}:41641")),
        "the public address from IMDS is advertised: {node}"
    );
    console.wait(
        Duration::from_secs(60),
        "the VM to be the subnet's primary router",
        || primary_router(&t, &hostname),
    );
    let page = console.wait(
        Duration::from_secs(60),
        "the client's HTTP request through the VM",
        || {
            t.fetch_vpc_page(Site::Cli)
                .map_err(|e| e.context(network_report(&t, &vm, &root)))
        },
    );
    let http_secs = fixed.elapsed().as_secs_f64();
    assert!(page.contains(causeway_e2e::HTTP_GREETING), "{page}");
    let imds_log = imds.log();
    assert!(
        imds_log.contains("PUT /latest/api/token 200")
            && imds_log.contains("GET /latest/user-data 200")
            && imds_log.contains("GET /latest/meta-data/iam/security-credentials/"),
        "the appliance used IMDSv2 for its config and credentials:\n{imds_log}"
    );

    println!(
        "image boot: disk.raw {} MiB ({} MiB allocated, debug appliance); build {build_secs:.0} s",
        raw_meta.len() >> 20,
        allocated_bytes(&raw_meta) >> 20,
    );
    println!(
        "image boot: good user data served -> registered with control: {registered_secs:.1} s; -> client's HTTP through the VM: {http_secs:.1} s"
    );
    println!(
        "image boot: boot-to-ready (first start + good user data -> HTTP): {:.1} s; registered: {:.1} s",
        first_start_secs + http_secs,
        first_start_secs + registered_secs
    );

    // A clean shutdown (ACPI power button), then the grown disk.
    stop_vm(&t, "qemu", &console, &qmp);
    let grown = root_partition(&volume).expect("the root partition after first boot");
    println!(
        "image boot: root partition {} MiB in the image, {} MiB after first boot on a {} MiB volume; its file system {} MiB",
        image_root.partition_bytes >> 20,
        grown.partition_bytes >> 20,
        volume_bytes >> 20,
        grown.filesystem_bytes >> 20
    );
    // The backup GPT takes the volume's last 33 sectors; alignment may
    // leave less than 1 MiB free before it.
    assert!(
        grown.partition_bytes >= image_root.partition_bytes + (GROWN_BY_MIB << 20)
            && volume_bytes - grown.end_bytes < 1 << 20,
        "systemd-repart grew the root partition over the rest of the {volume_bytes}-byte volume: {grown:?}"
    );
    assert_eq!(
        grown.filesystem_bytes, grown.partition_bytes,
        "systemd-growfs grew the root file system over the whole partition: {grown:?}"
    );

    control_keeps_its_state_on_its_volume(&t, &vm, &imds, &raw, &vpc);

    provisioner(&t, &["destroy"]).expect_success();
    drop(imds);
    drop(moto);
    t.finish();
}

/// Control's instance on its state volume, twice: `provisioner deploy
/// --role control` writes a launch template whose user data names the
/// volume it created (`state_volume`); the VM gets a blank disk whose NVMe
/// serial number is that volume's ID, as a Nitro instance does. The first
/// instance formats it and control creates its tailnet there; a second
/// instance, booted from a fresh copy of the image as a replacement is,
/// mounts the same volume without formatting it, and control answers its
/// admin API with the token the first instance created.
fn control_keeps_its_state_on_its_volume(
    t: &TestDeployment,
    vm: &Netns,
    imds: &FakeImds,
    image: &Path,
    vpc: &str,
) {
    let root = t.dep().paths().root().to_owned();
    provisioner(
        t,
        &[
            "deploy",
            "--role",
            "control",
            "--vpc",
            vpc,
            "--health-timeout",
            "0",
        ],
    )
    .expect_success();
    let user_data = launch_template_user_data(t, "control");
    let volume_id = user_data
        .lines()
        .find_map(|l| l.strip_prefix("state_volume = "))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("control's user data names no state volume:\n{user_data}"));
    // The admin API on every address, so that the test can ask control
    // with the token it finds on the volume; nothing else changes.
    let served = user_data.replace(
        "admin_listen = \"127.0.0.1:8081\"",
        &format!("admin_listen = \"0.0.0.0:{CONTROL_ADMIN_PORT}\""),
    );
    assert_ne!(served, user_data, "control's admin listener: {user_data}");
    imds.set("user-data", Some(&served));
    let state = root.join("control-state.raw");
    std::fs::File::create(&state)
        .and_then(|f| f.set_len(STATE_VOLUME_MIB << 20))
        .expect("a blank state volume");
    let serial = volume_id.replacen('-', "", 1);

    let mut tokens: Vec<String> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    for (n, what) in [(1, "first instance, blank volume"), (2, "replacement")] {
        let disk = root.join(format!("control-{n}-root.raw"));
        run(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(image)
                .arg(&disk),
            Duration::from_secs(120),
        )
        .expect_success();
        let name = format!("qemu-control-{n}");
        let (console, qmp) = start_vm(t, vm, &name, &disk, Some((&state, &serial)));
        let url = format!("http://{PUBLIC_ADDR}:8080/");
        console.wait(BOOT_TIMEOUT, "control to answer on its port", || {
            let ran = t.run_in(Site::Cli, &["curl", "-sS", "--max-time", "3", &url]);
            ensure!(
                ran.stdout
                    .contains("only /causeway/v1/control is served here"),
                "{ran}"
            );
            Ok(())
        });
        println!(
            "image boot: control ({what}): QEMU start -> control serving: {:.1} s",
            console.started.elapsed().as_secs_f64()
        );
        if let Some(token) = tokens.first() {
            // The replacement's control holds the first one's token.
            let ran = admin_nodes(t, token);
            assert!(
                ran.stdout.trim_end().ends_with("\n200"),
                "admin API with the volume's token: {ran}"
            );
            let wrong = admin_nodes(t, &"0".repeat(64));
            assert!(
                wrong.stdout.trim_end().ends_with("\n401"),
                "admin API with another token: {wrong}"
            );
        }
        stop_vm(t, &name, &console, &qmp);
        let probe = run(
            Command::new("blkid")
                .args(["-p", "-o", "export"])
                .arg(&state),
            Duration::from_secs(10),
        )
        .expect_success();
        assert!(
            probe.stdout.contains("TYPE=ext4") && probe.stdout.contains("LABEL=causeway-state"),
            "the instance made an ext4 file system on the volume: {probe}"
        );
        tokens.push(volume_file(&state, "admin.token"));
        let key = volume_file(&state, "control.pub");
        assert!(!key.is_empty(), "control's key is on the volume");
        keys.push(key);
    }
    assert_eq!(
        tokens[0], tokens[1],
        "the replacement kept the first instance's state (no new tailnet)"
    );
    assert_eq!(keys[0], keys[1], "the replacement kept control's key");
}

/// `GET /api/v1/nodes` on the VM's control, with `token`, from the client
/// namespace; the status code is the last line.
fn admin_nodes(t: &TestDeployment, token: &str) -> causeway_e2e::Ran {
    t.run_in(
        Site::Cli,
        &[
            "curl",
            "-sS",
            "--max-time",
            "3",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("http://{PUBLIC_ADDR}:{CONTROL_ADMIN_PORT}/api/v1/nodes"),
        ],
    )
}

/// A file's contents from the root of the ext4 file system on `disk`
/// (`debugfs`, read-only).
fn volume_file(disk: &Path, name: &str) -> String {
    let ran = run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat /{name}"))
            .arg(disk),
        Duration::from_secs(10),
    )
    .expect_success();
    ran.stdout.trim().to_owned()
}

/// Starts QEMU (TCG, BIOS) as process `name` in namespace `vm`: `disk` as
/// the root volume, optionally a state volume as an NVMe disk with the
/// given serial number (an EBS volume's, on a Nitro instance), and the two
/// NICs on the namespace's bridges. Its console, and its QMP socket.
fn start_vm(
    t: &TestDeployment,
    vm: &Netns,
    name: &str,
    disk: &Path,
    state: Option<(&Path, &str)>,
) -> (Console, PathBuf) {
    let root = t.dep().paths().root();
    let serial = root.join(format!("{name}-serial.log"));
    let qmp = root.join(format!("{name}-qmp.sock"));
    let mut qemu = vm.command("qemu-system-x86_64");
    qemu.args([
        "-machine", "q35", "-accel", "tcg", "-m", "1024", "-smp", "2",
    ])
    .args(["-display", "none", "-monitor", "none"])
    .arg("-serial")
    .arg(format!("file:{}", serial.display()))
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", disk.display()))
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", qmp.display()));
    if let Some((volume, serial)) = state {
        qemu.arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=state",
                volume.display()
            ))
            .arg("-device")
            .arg(format!("nvme,drive=state,serial={serial}"));
    }
    for (tap, mac) in [("tap0", MAC_SUBNET), ("tap1", MAC_VPC)] {
        qemu.arg("-nic").arg(format!(
            "tap,ifname={tap},script=no,downscript=no,model=virtio-net-pci,mac={mac}"
        ));
    }
    let console = Console {
        path: serial,
        started: Instant::now(),
    };
    t.spawn_recorded(
        name,
        vm.name(),
        &mut qemu,
        &root.join(format!("{name}.log")),
    );
    (console, qmp)
}

/// A clean shutdown of VM `name` through its ACPI power button; waits for
/// QEMU to exit.
fn stop_vm(t: &TestDeployment, name: &str, console: &Console, qmp: &Path) {
    power_down(qmp).expect("asking QEMU to power the VM down");
    let qemu_process = t.process(name);
    console.wait(Duration::from_secs(120), "the VM to power off", || {
        ensure!(!qemu_process.is_alive(), "QEMU still runs");
        Ok(())
    });
}

/// `provisioner image build --arch x86_64` with the workspace's debug
/// appliance into a temporary directory (package cache under target/).
fn build_image() -> tempfile::TempDir {
    let appliance = binary("appliance");
    let target = appliance
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in target/debug")
        .to_owned();
    let out = tempfile::tempdir().expect("a directory for the image");
    let mut cmd = Command::new(binary("provisioner"));
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["image", "build", "--arch", "x86_64", "--size-mib", "1024"])
        .arg("--appliance-bin")
        .arg(&appliance)
        .arg("--out")
        .arg(out.path())
        .arg("--cache")
        .arg(target.join("image-cache"));
    run(&mut cmd, Duration::from_secs(900)).expect_success();
    out
}

/// The root partition (GPT partition `root`) of a raw disk and its ext4
/// file system, as `sfdisk` and `dumpe2fs` read them.
#[derive(Debug)]
struct RootPartition {
    /// Where it ends, from the start of the disk.
    end_bytes: u64,
    partition_bytes: u64,
    filesystem_bytes: u64,
}

fn root_partition(disk: &Path) -> anyhow::Result<RootPartition> {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(disk)
        .output()
        .context("running sfdisk")?;
    ensure!(
        out.status.success(),
        "sfdisk --json {}: {}",
        disk.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let table: Value = serde_json::from_slice(&out.stdout).context("sfdisk's JSON")?;
    let sector = table["partitiontable"]["sectorsize"]
        .as_u64()
        .unwrap_or(512);
    let Some(part) = table["partitiontable"]["partitions"]
        .as_array()
        .and_then(|parts| parts.iter().find(|p| p["name"] == "root"))
    else {
        bail!("no partition named root in {table}");
    };
    let (start, size) = (
        part["start"].as_u64().context("start")?,
        part["size"].as_u64().context("size")?,
    );
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(format!("{}?offset={}", disk.display(), start * sector))
        .output()
        .context("running dumpe2fs")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name:?} in dumpe2fs's output: {text}"))
    };
    Ok(RootPartition {
        end_bytes: (start + size) * sector,
        partition_bytes: size * sector,
        filesystem_bytes: field("Block count:")? * field("Block size:")?,
    })
}

/// Presses the VM's ACPI power button through QEMU's QMP socket.
fn power_down(qmp: &Path) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(qmp)
        .with_context(|| format!("connecting to {}", qmp.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut lines = BufReader::new(stream.try_clone()?).lines();
    let mut writer = stream;
    // The greeting, then one answer per command.
    lines.next().context("no QMP greeting")??;
    for command in ["qmp_capabilities", "system_powerdown"] {
        writeln!(writer, "{{\"execute\": \"{command}\"}}")?;
        // Events (`{"event": ...}`) may come before the answer.
        let answer = loop {
            let line = lines.next().context("QMP closed")??;
            if !line.contains("\"event\"") {
                break line;
            }
        };
        ensure!(answer.contains("\"return\""), "{command}: {answer}");
    }
    Ok(())
}

fn allocated_bytes(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

/// The VM's side of the world, in namespace `vm` (already on the public
/// bridge as eth0 with PUBLIC_ADDR): bridge `br-subnet` (the instance's
/// subnet, gateway SUBNET_GATEWAY, tap0), bridge `br-vpc` (tap1 and the
/// local VPC host's link, moved here from the stopped router), IMDS's
/// address, and a 1:1 NAT between PUBLIC_ADDR and PRIVATE_ADDR. Nothing is
/// forwarded between the public side and the VPC bridge but by the VM.
///
/// Where the host has `br_netfilter` loaded (`bridge-nf-call-iptables`),
/// frames switched within a bridge also pass this namespace's forward
/// hook, with the bridge as both input and output interface; the forward
/// chain accepts those, or the VM's VPC NIC could not reach the VPC host.
fn wire_the_vpc(t: &TestDeployment, vm: &Netns) {
    let ip = |args: &[&str]| {
        vm.ip(args)
            .unwrap_or_else(|e| panic!("wiring {}: {e:#}", vm.name()));
    };
    for (bridge, addr, tap) in [
        ("br-subnet", SUBNET_GATEWAY, "tap0"),
        ("br-vpc", VPC_BRIDGE_ADDR, "tap1"),
    ] {
        ip(&["link", "add", bridge, "type", "bridge"]);
        ip(&["addr", "add", addr, "dev", bridge]);
        ip(&["link", "set", bridge, "up"]);
        ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        ip(&["link", "set", tap, "master", bridge]);
        ip(&["link", "set", tap, "up"]);
    }
    t.dep()
        .netns(Site::Rtr)
        .ip(&["link", "set", "dev", "vpc0", "netns", vm.name()])
        .expect("moving the VPC host's link");
    ip(&["link", "set", "vpc0", "master", "br-vpc"]);
    ip(&["link", "set", "vpc0", "up"]);
    // The VPC host still maps VPC_NIC_ADDR to the router's old MAC, now a
    // bridge port's own address (frames to it stop at the namespace).
    t.dep()
        .netns(Site::Vpc)
        .ip(&["neigh", "flush", "all"])
        .expect("flushing the VPC host's neighbours");
    let probe = vm_file(
        t,
        "probe.nft",
        "table ip probe {\n  chain input { type filter hook input priority 0; ip saddr 100.64.0.0/10 counter; ip saddr 198.19.1.1 counter; }\n  chain output { type filter hook output priority 0; ip daddr 198.19.1.1 counter; ip daddr 100.64.0.0/10 counter; }\n}\n",
    );
    run(
        t.command_in(Site::Vpc, "nft").arg("-f").arg(&probe),
        Duration::from_secs(10),
    )
    .expect_success();
    ip(&["addr", "add", &format!("{IMDS_ADDR}/32"), "dev", "lo"]);
    let in_vm = |program: &str, args: &[&str], stdin: Option<&str>| {
        let mut cmd = vm.command(program);
        cmd.args(args);
        let ran = match stdin {
            Some(text) => {
                let file = vm_file(t, "nat.nft", text);
                cmd.arg(&file);
                run(&mut cmd, Duration::from_secs(30))
            }
            None => run(&mut cmd, Duration::from_secs(30)),
        };
        ran.expect_success();
    };
    in_vm("sysctl", &["-qw", "net.ipv4.ip_forward=1"], None);
    let rules = format!(
        "table ip instance {{
  chain prerouting {{ type nat hook prerouting priority dstnat; iifname \"eth0\" ip daddr {PUBLIC_ADDR} dnat to {PRIVATE_ADDR}; }}
  chain postrouting {{ type nat hook postrouting priority srcnat; oifname \"eth0\" ip saddr {PRIVATE_ADDR} snat to {PUBLIC_ADDR}; }}
  chain forward {{ type filter hook forward priority filter; policy drop;
    iifname \"br-vpc\" oifname \"br-vpc\" accept;
    iifname \"br-subnet\" oifname \"br-subnet\" accept;
    iifname \"br-subnet\" oifname \"eth0\" udp sport 41641 counter accept;
    iifname \"eth0\" oifname \"br-subnet\" udp dport 41641 counter accept;
    iifname \"br-subnet\" oifname \"eth0\" counter accept;
    iifname \"eth0\" oifname \"br-subnet\" counter accept;
  }}
}}
"
    );
    in_vm("nft", &["-f"], Some(&rules));
}

/// What the client and the VM's namespace see, for a failure message.
fn network_report(t: &TestDeployment, vm: &Netns, root: &Path) -> String {
    let client = t
        .status(causeway_e2e::local::Node::Client)
        .map(|s| s["peers"].to_string())
        .unwrap_or_else(|e| format!("{e:#}"));
    let mut out = format!("client's peers: {client}\n");
    for args in [&["neigh"][..], &["route"][..], &["-s", "link"][..]] {
        out.push_str(&format!(
            "ip {args:?}: {}\n",
            vm.ip(args).unwrap_or_else(|e| format!("{e:#}"))
        ));
    }
    let direct = run(
        vm.command("curl")
            .args(["-sS", "--max-time", "3", "http://198.19.1.10/"]),
        Duration::from_secs(10),
    );
    out.push_str(&format!("from the VM's namespace: {direct}\n"));
    let rules = run(
        vm.command("nft").args(["list", "ruleset"]),
        Duration::from_secs(10),
    );
    out.push_str(&format!("{rules}\n"));
    let vpc = run(
        t.command_in(Site::Vpc, "nft")
            .args(["list", "table", "ip", "probe"]),
        Duration::from_secs(10),
    );
    out.push_str(&format!("VPC host: {vpc}\n"));
    out.push_str(&std::fs::read_to_string(root.join("dnsmasq.log")).unwrap_or_default());
    out
}

/// Writes `text` to `name` in the deployment's directory; its path.
fn vm_file(t: &TestDeployment, name: &str, text: &str) -> PathBuf {
    let path = t.dep().paths().root().join(name);
    std::fs::write(&path, text).expect("writing a file for the VM's namespace");
    path
}

/// Control's record of `hostname`, online.
fn node_online(t: &TestDeployment, hostname: &str) -> anyhow::Result<Value> {
    let nodes = t.nodes();
    let Some(node) = nodes.iter().find(|n| n["hostname"] == hostname) else {
        bail!("{hostname} has not registered: {nodes:?}");
    };
    ensure!(node["online"] == true, "{hostname} is not online: {node}");
    Ok(node.clone())
}

fn assert_not_registered(t: &TestDeployment, hostname: &str) {
    let nodes = t.nodes();
    assert!(
        !nodes.iter().any(|n| n["hostname"] == hostname),
        "{hostname} registered with bad user data: {nodes:?}"
    );
}

/// Ok once control names `hostname` the primary router of VPC_SUBNET.
fn primary_router(t: &TestDeployment, hostname: &str) -> anyhow::Result<()> {
    let routes = t.admin_json(&["routes", "list"]);
    let entries = routes.as_array().context("a route list")?;
    let Some(e) = entries.iter().find(|e| e["name"] == hostname) else {
        bail!("{hostname} advertises no route: {routes}");
    };
    ensure!(
        e["primary"].to_string().contains(VPC_SUBNET),
        "{hostname} is not primary: {routes}"
    );
    Ok(())
}

/// The VM's serial console (a file QEMU writes); dropped during a panic,
/// it prints its tail: the boot, systemd's status lines and every error
/// the journal forwards to the console.
struct Console {
    path: PathBuf,
    started: Instant,
}

impl Console {
    fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.path).unwrap_or_default()).into_owned()
    }

    /// Waits until the console shows `line`.
    fn wait_for(&self, timeout: Duration, line: &str) {
        self.wait(timeout, &format!("{line:?} on the console"), || {
            ensure!(self.text().contains(line), "not yet");
            Ok(())
        });
    }

    /// Polls `probe` every 500 ms until it returns `Ok`; panics after
    /// `timeout` naming `what` and the last error.
    fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut probe: impl FnMut() -> anyhow::Result<T>,
    ) -> T {
        let begun = Instant::now();
        loop {
            match probe() {
                Ok(v) => return v,
                Err(e) if begun.elapsed() >= timeout => panic!(
                    "timed out after {timeout:?} ({:.0} s after QEMU started) waiting for {what}; last: {e:#}",
                    self.started.elapsed().as_secs_f64()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.text();
            let tail: Vec<&str> = text.lines().rev().take(80).collect();
            eprintln!("--- the VM's serial console (last 80 lines)");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}
