//! Harness for Causeway's end-to-end tests: finds the built binaries, gives
//! every deployment a unique name, deploys the local namespace topology
//! with the provisioner's library, and tears everything down again (also
//! when a test panics) before checking that nothing of it is left.
//!
//! Every scenario lives in its own file under `tests/tests/`. They need
//! root, `cargo build --workspace --bins` first, and must run one at a time
//! (`cargo nextest run -p causeway-e2e --test-threads 1`).

pub mod aws;
pub mod connector;
pub mod internet;
pub mod via6;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use causeway_provisioner::console::ProgressSink;
use causeway_provisioner::local::process::spawn_logged;
use causeway_provisioner::local::topology::BRIDGE;
use causeway_provisioner::local::{
    DeployOptions, DeploymentState, DestroyGuard, LocalDeployment, Netns, Node, ProcessRecord,
    Site, deploy, node_site,
};
use causeway_provisioner::name::DeploymentName;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub use causeway_provisioner::local;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The VPC web server's URL (198.19.1.10, reachable only through the router).
pub const VPC_URL: &str = "http://198.19.1.10/";

/// The line the VPC web server's index page carries.
pub const HTTP_GREETING: &str = causeway_provisioner::local::services::HTTP_GREETING;

/// The row the VPC database returns.
pub const DB_GREETING: &str = causeway_provisioner::local::services::DB_GREETING;

/// The subnet the router advertises.
pub const VPC_SUBNET: &str = "198.19.1.0/24";

/// The client namespace's public address.
pub const CLIENT_PUBLIC_ADDR: &str = "198.18.0.4";

/// Process key of control in the deployment's `state.json`.
pub const CONTROL_KEY: &str = "control";

/// A built binary of this workspace (`appliance`, `provisioner`). Looks in
/// `$CARGO_TARGET_DIR/debug`, next to the test executable's `target/debug`,
/// then `<workspace>/target/debug`; panics naming every place it looked.
pub fn binary(name: &str) -> PathBuf {
    let mut dirs = Vec::new();
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(target).join("debug"));
    }
    // Test executables live in target/<profile>/deps.
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        dirs.push(profile_dir.to_owned());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace");
    dirs.push(workspace.join("target").join("debug"));
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return found;
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    panic!(
        "the `{name}` binary is missing (looked in {}); build it first with `cargo build --workspace --bins`",
        looked.join(", ")
    );
}

/// Runs the real `appliance check-config` on `text` (written to a
/// temporary file named `label.toml`): the way an instance's user data is
/// checked without booting one.
pub fn check_config(label: &str, text: &str) -> Ran {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(format!("{label}.toml"));
    std::fs::write(&path, text).expect("writing the config under test");
    run(
        Command::new(binary("appliance"))
            .args(["check-config", "--config"])
            .arg(&path),
        Duration::from_secs(60),
    )
}

/// What `appliance check-config` reports as the roles enabled by the user
/// data of a provisioner role.
pub fn appliance_roles(role: causeway_provisioner::role::Role) -> &'static str {
    use causeway_provisioner::role::Role;
    match role {
        Role::SubnetRouter | Role::Via6 => "device, subnet-router",
        Role::ExitNode => "device, exit-node",
        Role::AppConnector => "device, app-connector",
        Role::Recorder => "recorder, device",
        Role::Control => "control",
        other => panic!("no expected appliance roles for {other}: is it built now?"),
    }
}

/// A deployment name no other test process uses: `e<pid>-<n>` in base 36
/// (at most 8 characters, as the provisioner requires).
pub fn unique_name() -> DeploymentName {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    assert!(n < 36, "more than 36 deployments in one test process");
    let name = format!("e{}-{}", base36(std::process::id()), base36(n));
    name.parse()
        .unwrap_or_else(|e| panic!("generated deployment name {name:?} is invalid: {e}"))
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("base-36 digits are ASCII")
}

/// Polls `probe` every 200 ms until it returns `Ok`, and returns that value.
/// Panics after `timeout` naming `what` it waited for and the last error.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> anyhow::Result<T>,
) -> T {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(e) if started.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {e:#}")
            }
            Err(_) => sleep(Duration::from_millis(200)),
        }
    }
}

/// A finished command: what ran and what it said.
#[derive(Debug)]
pub struct Ran {
    /// The command line.
    pub command: String,
    /// Exit status (`None` when it was killed after its timeout).
    pub status: Option<ExitStatus>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Ran {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// Panics with the command, status and stderr unless it exited 0.
    #[track_caller]
    pub fn expect_success(self) -> Self {
        assert!(self.success(), "{} failed: {self}", self.command);
        self
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self
            .status
            .map_or("killed after timeout".to_owned(), |s| s.to_string());
        write!(
            f,
            "`{}` ({status}, {:.1} s)\n--- stdout\n{}\n--- stderr\n{}",
            self.command,
            self.elapsed.as_secs_f64(),
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` with stdin closed, killing it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    let command = describe(cmd);
    let out = tempfile::tempfile().expect("a temporary file for stdout");
    let err = tempfile::tempfile().expect("a temporary file for stderr");
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{command}`: {e}"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(20));
    };
    Ran {
        command,
        status,
        stdout: read_back(out),
        stderr: read_back(err),
        elapsed: started.elapsed(),
    }
}

fn read_back(mut file: fs::File) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    let _ = file.seek(SeekFrom::Start(0));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    text.push_str(&String::from_utf8_lossy(&bytes));
    text
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A child process killed (and reaped) when dropped, also during a panic.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Waits up to `timeout` for the child to exit and collects its output
    /// (stdout and stderr must be piped); panics naming `what` on timeout.
    pub fn wait_output(mut self, timeout: Duration, what: &str) -> std::process::Output {
        use std::io::Read;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.0.try_wait().expect("polling a child") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not finish within {timeout:?}"
            );
            sleep(Duration::from_millis(50));
        };
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut o) = self.0.stdout.take() {
            let _ = o.read_to_end(&mut stdout);
        }
        if let Some(mut e) = self.0.stderr.take() {
            let _ = e.read_to_end(&mut stderr);
        }
        std::process::Output {
            status,
            stdout,
            stderr,
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.0.try_wait().expect("polling a child").is_none()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Names of all network namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    Netns::list()
        .expect("`ip netns list` works")
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Whether `pid` is a live (non-zombie) process.
pub fn pid_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
fn stop_pid(pid: i32, grace: Duration) {
    if kill(Pid::from_raw(pid), Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + grace;
    while pid_alive(pid) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    if pid_alive(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// A deployment owned by one test. Dropping it (also during a panic) stops
/// whatever the test started, deletes the namespaces the test added, and
/// destroys the deployment; [`TestDeployment::finish`] does the same and
/// asserts that nothing is left.
#[derive(Debug)]
pub struct TestDeployment {
    dep: LocalDeployment,
    guard: Option<DestroyGuard>,
    extra_namespaces: Vec<String>,
    extra_host_links: Vec<String>,
    extra_files: Vec<PathBuf>,
    /// Directories removed (when empty) after `extra_files`.
    extra_dirs: Vec<PathBuf>,
}

impl TestDeployment {
    /// Deploys everything (control, router, client, verified) under a new name.
    pub fn deploy() -> Self {
        Self::deploy_with(|_| {})
    }

    /// Deploys under a new name with options adjusted by `adjust`.
    pub fn deploy_with(adjust: impl FnOnce(&mut DeployOptions)) -> Self {
        let mut opts = DeployOptions::new(unique_name());
        opts.appliance_bin = Some(binary("appliance"));
        opts.progress = ProgressSink::Stderr;
        opts.wait_timeout = WAIT;
        adjust(&mut opts);
        // Remove a leftover of a crashed earlier run with a recycled pid.
        let stale = causeway_provisioner::local::destroy(&opts)
            .unwrap_or_else(|e| panic!("destroying a stale {}: {e:#}", opts.name));
        assert!(
            stale.leftovers.is_empty(),
            "stale deployment {} could not be removed: {:?}",
            opts.name,
            stale.leftovers
        );
        // Armed before anything exists, so a half-finished deploy is cleaned.
        let guard = DestroyGuard::new(&opts);
        let dep = match deploy(&opts) {
            Ok(dep) => dep,
            Err(e) => {
                let logs = logs_of(&opts.state_dir);
                drop(guard);
                panic!("deploy of {} failed: {e:#}\n{logs}", opts.name);
            }
        };
        Self {
            dep,
            guard: Some(guard),
            extra_namespaces: Vec::new(),
            extra_host_links: Vec::new(),
            extra_files: Vec::new(),
            extra_dirs: Vec::new(),
        }
    }

    /// Runs the provisioner's deploy again with options adjusted by `adjust`
    /// (same name and state directory), e.g. to start nodes left out before.
    pub fn redeploy_with(&mut self, adjust: impl FnOnce(&mut DeployOptions)) {
        let mut opts = self.dep.options().clone();
        adjust(&mut opts);
        match deploy(&opts) {
            Ok(dep) => self.dep = dep,
            Err(e) => panic!(
                "deploy of {} failed: {e:#}\n{}",
                opts.name,
                logs_of(&opts.state_dir)
            ),
        }
    }

    /// The provisioner's handle on the deployment.
    pub fn dep(&self) -> &LocalDeployment {
        &self.dep
    }

    /// The deployment name.
    pub fn name(&self) -> String {
        self.dep.name().to_string()
    }

    /// The appliance binary.
    pub fn appliance_bin(&self) -> PathBuf {
        self.dep
            .appliance()
            .map(|a| a.bin().to_owned())
            .expect("deploy_with always sets the appliance binary")
    }

    /// A command running `program` inside the namespace of `site`.
    pub fn command_in(&self, site: Site, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.dep.netns(site).command(program)
    }

    /// Runs `args` inside `site`'s namespace (30 s timeout).
    pub fn run_in(&self, site: Site, args: &[&str]) -> Ran {
        let (program, rest) = args.split_first().expect("a program to run");
        let mut cmd = self.command_in(site, program);
        cmd.args(rest);
        run(&mut cmd, WAIT)
    }

    /// Runs `args` inside namespace `ns` (one a test added); panics
    /// unless it succeeds; returns its output.
    pub fn run_in_ns(&self, ns: &Netns, args: &[&str]) -> String {
        let (program, rest) = args.split_first().expect("a program to run");
        let mut cmd = ns.command(program);
        cmd.args(rest);
        run(&mut cmd, WAIT).expect_success().stdout
    }

    /// `curl -sS --max-time SECS URL` from `site`.
    pub fn curl(&self, site: Site, url: &str, max_time_secs: u32) -> Ran {
        self.run_in(
            site,
            &[
                "curl",
                "-fsS",
                "--max-time",
                &max_time_secs.to_string(),
                url,
            ],
        )
    }

    /// The VPC web page fetched from `site`, or why not.
    pub fn fetch_vpc_page(&self, site: Site) -> anyhow::Result<String> {
        let ran = self.curl(site, VPC_URL, 3);
        if !ran.success() {
            bail!("{ran}");
        }
        if !ran.stdout.contains(HTTP_GREETING) {
            bail!("the page lacks {HTTP_GREETING:?}: {}", ran.stdout);
        }
        Ok(ran.stdout)
    }

    /// `appliance status --json` of `node`, unparsed into a summary (all fields).
    pub fn status(&self, node: Node) -> anyhow::Result<Value> {
        let mut cmd = self.command_in(node_site(node), self.appliance_bin());
        cmd.arg("status")
            .arg("--state-dir")
            .arg(self.dep.paths().node_dir(node))
            .arg("--json");
        let ran = run(&mut cmd, Duration::from_secs(10));
        if !ran.success() {
            bail!("{ran}");
        }
        serde_json::from_str(&ran.stdout).with_context(|| format!("parsing status: {ran}"))
    }

    /// `appliance admin ARGS…` in the control namespace with the deployment's
    /// admin token.
    pub fn admin(&self, args: &[&str]) -> Ran {
        let app = self.dep.appliance().expect("an appliance binary");
        let mut cmd = app.admin_command(
            &self.dep.netns(Site::Ctl),
            &self.dep.paths().admin_token(),
            args,
        );
        run(&mut cmd, WAIT)
    }

    /// `appliance admin --json ARGS…`, parsed; panics if it fails.
    #[track_caller]
    pub fn admin_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let ran = self.admin(&all).expect_success();
        serde_json::from_str(&ran.stdout)
            .unwrap_or_else(|e| panic!("admin output is not JSON ({e}): {ran}"))
    }

    /// The nodes control knows (`admin nodes list --json`).
    pub fn nodes(&self) -> Vec<Value> {
        match self.admin_json(&["nodes", "list"]) {
            Value::Array(nodes) => nodes,
            other => panic!("`admin nodes list --json` is not an array: {other}"),
        }
    }

    /// The record of process `key` (`control`, `router`, `client`, …) in `state.json`.
    #[track_caller]
    pub fn process(&self, key: &str) -> ProcessRecord {
        self.state()
            .processes
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("state.json records no process {key:?}"))
    }

    /// `getent ahostsv4 NAME` in `site`: the first IPv4 address the C
    /// library finds, through the namespace's own `resolv.conf`.
    pub fn resolve(&self, site: Site, name: &str) -> anyhow::Result<String> {
        let ran = self.run_in(site, &["getent", "ahostsv4", name]);
        anyhow::ensure!(ran.success(), "getent ahostsv4 {name}: {ran}");
        ran.stdout
            .split_whitespace()
            .next()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("getent ahostsv4 {name}: no address in {ran}"))
    }

    /// Kills the recorded process `key` with SIGKILL (a crash: nothing of
    /// its own clean-up runs) and waits until it is gone.
    pub fn kill_process(&self, key: &str) -> ProcessRecord {
        let rec = self.process(key);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap_or_else(|e| panic!("SIGKILL {key} (pid {}): {e}", rec.pid));
        wait_until(WAIT, &format!("{key} to die"), || {
            anyhow::ensure!(!rec.is_alive(), "pid {} still alive", rec.pid);
            Ok(())
        });
        rec
    }

    /// `state.json`.
    pub fn state(&self) -> DeploymentState {
        self.dep
            .state()
            .expect("state.json readable")
            .expect("the deployment has a state.json")
    }

    /// Starts control again exactly as the provisioner does (same config,
    /// namespace and log) and records it in `state.json`, so destroy stops it.
    pub fn respawn_control(&self) -> ProcessRecord {
        let app = self.dep.appliance().expect("an appliance binary");
        let ctl = self.dep.netns(Site::Ctl);
        let mut cmd = app.run_command(&ctl, &self.dep.paths().control_config());
        let rec = spawn_logged(&mut cmd, ctl.name(), &self.dep.paths().control_log())
            .expect("control starts");
        self.record(CONTROL_KEY, rec.clone());
        rec
    }

    /// Starts `node`'s appliance again as the provisioner does and records it.
    pub fn respawn_node(&self, node: Node) -> ProcessRecord {
        let mut cmd = self.dep.node_command(node).expect("the node command");
        let ns = self.dep.namespace(node_site(node));
        let rec =
            spawn_logged(&mut cmd, &ns, &self.dep.paths().node_log(node)).expect("the node starts");
        self.record(node.as_str(), rec.clone());
        rec
    }

    /// Stops `node` with SIGTERM (asserting it obeyed), rewrites its config
    /// file with `edit`, starts it again as the provisioner does and waits
    /// until its status says `running`.
    pub fn restart_node_with_config(
        &self,
        node: Node,
        edit: impl FnOnce(&str) -> String,
    ) -> ProcessRecord {
        let how = self.process(node.as_str()).stop(Duration::from_secs(10));
        assert_eq!(
            format!("{how:?}"),
            "Terminated",
            "the {} ignored SIGTERM",
            node.as_str()
        );
        rewrite_file(&self.dep.paths().node_config(node), edit);
        self.respawn_node_running(node)
    }

    /// [`TestDeployment::respawn_node`], then waits until its status says
    /// `running`.
    pub fn respawn_node_running(&self, node: Node) -> ProcessRecord {
        let rec = self.respawn_node(node);
        wait_until(
            WAIT,
            &format!("the restarted {} to run", node.as_str()),
            || {
                let s = self.status(node)?;
                anyhow::ensure!(s["state"] == "running", "{s}");
                Ok(())
            },
        );
        rec
    }

    /// Stops control with SIGTERM, rewrites its config file with `edit`,
    /// starts it again, and waits until the admin API answers and both
    /// nodes are connected and running again.
    pub fn restart_control_with_config(&self, edit: impl FnOnce(&str) -> String) -> ProcessRecord {
        let how = self.process(CONTROL_KEY).stop(Duration::from_secs(10));
        assert_eq!(format!("{how:?}"), "Terminated", "control ignored SIGTERM");
        rewrite_file(&self.dep.paths().control_config(), edit);
        let rec = self.respawn_control();
        wait_until(WAIT, "the restarted control's admin API", || {
            let ran = self.admin(&["nodes", "list"]);
            anyhow::ensure!(ran.success(), "{ran}");
            Ok(())
        });
        for node in [Node::Router, Node::Client] {
            wait_until(
                WAIT,
                &format!("the {} to reconnect to control", node.as_str()),
                || {
                    let s = self.status(node)?;
                    anyhow::ensure!(
                        s["control_connected"] == true && s["state"] == "running",
                        "{s}"
                    );
                    Ok(())
                },
            );
        }
        rec
    }

    /// Starts `cmd` (already set up to run inside a namespace called
    /// `namespace`) with its output appended to `log`, and records it in
    /// `state.json` under `key`, so teardown stops it and checks it is gone.
    pub fn spawn_recorded(
        &self,
        key: &str,
        namespace: &str,
        cmd: &mut Command,
        log: &Path,
    ) -> ProcessRecord {
        let rec =
            spawn_logged(cmd, namespace, log).unwrap_or_else(|e| panic!("starting {key}: {e:#}"));
        self.record(key, rec.clone());
        rec
    }

    /// Starts an extra device in the client's namespace, registered with
    /// `auth_key` ([`Self::write_extra_node`] and [`Self::start_extra_node`]):
    /// `tun` and `port` must differ from the client's (`cw0`, 41641).
    /// Returns the process and its state directory.
    pub fn start_client_device(
        &self,
        hostname: &str,
        tun: &str,
        port: u16,
        auth_key: &str,
    ) -> (ProcessRecord, PathBuf) {
        let endpoint = format!("{CLIENT_PUBLIC_ADDR}:{port}")
            .parse()
            .expect("a socket address");
        let node = self.write_extra_node(hostname, auth_key, endpoint, tun, false);
        let rec = self.start_extra_node(&node, &self.dep.netns(Site::Cli));
        (rec, node.state_dir)
    }

    /// Rejects (`block`) or allows again new TCP connections from `site`
    /// to control's node-facing port, with a TCP reset; connections already
    /// open (a map stream) are untouched. Control looks unreachable to a
    /// node there, without stopping it.
    pub fn block_new_control_connections(&self, site: Site, block: bool) {
        use causeway_provisioner::local::topology::{CONTROL_ADDR, CONTROL_PORT};
        let script = if block {
            format!(
                "table inet cw_test_block {{\n  chain output {{\n    type filter hook output priority 0;\n    ip daddr {CONTROL_ADDR} tcp dport {CONTROL_PORT} ct state new reject with tcp reset\n  }}\n}}\n"
            )
        } else {
            "delete table inet cw_test_block\n".to_owned()
        };
        let path = std::env::temp_dir().join(format!("{}-block.nft", self.name()));
        fs::write(&path, script).expect("writing the nftables script");
        let ran = self.run_in(site, &["nft", "-f", &path.display().to_string()]);
        let _ = fs::remove_file(&path);
        assert!(ran.success(), "nft in {site:?}: {ran}");
    }

    /// `appliance status --json` of an appliance in `site` whose state
    /// directory is `state_dir` (for nodes a test starts itself).
    pub fn status_at(&self, site: Site, state_dir: &Path) -> anyhow::Result<Value> {
        self.status_in(&self.dep.netns(site), state_dir)
    }

    /// `appliance status --json` of an appliance in namespace `ns` (one a
    /// test added) whose state directory is `state_dir`.
    pub fn status_in(&self, ns: &Netns, state_dir: &Path) -> anyhow::Result<Value> {
        let mut cmd = ns.command(self.appliance_bin());
        cmd.arg("status")
            .arg("--state-dir")
            .arg(state_dir)
            .arg("--json");
        let ran = run(&mut cmd, Duration::from_secs(10));
        if !ran.success() {
            bail!("{ran}");
        }
        serde_json::from_str(&ran.stdout).with_context(|| format!("parsing status: {ran}"))
    }

    /// The rules of nftables table `inet causeway` in `site`
    /// (`nft -j list table inet causeway`), each the JSON object under `"rule"`.
    pub fn causeway_nft_rules(&self, site: Site) -> Vec<Value> {
        let ran = self
            .run_in(site, &["nft", "-j", "list", "table", "inet", "causeway"])
            .expect_success();
        let doc: Value = serde_json::from_str(&ran.stdout)
            .unwrap_or_else(|e| panic!("nft output is not JSON ({e}): {ran}"));
        doc["nftables"]
            .as_array()
            .unwrap_or_else(|| panic!("no \"nftables\" array: {ran}"))
            .iter()
            .filter_map(|item| item.get("rule").cloned())
            .collect()
    }

    fn record(&self, key: &str, rec: ProcessRecord) {
        let mut state = self.state();
        state.processes.insert(key.to_owned(), rec);
        state.save(self.dep.paths()).expect("state.json writable");
    }

    /// Creates namespace `cw-NAME-SUFFIX` plugged into the deployment's
    /// public bridge (`br0` in the `-pub` namespace) as `eth0` with `addr`
    /// (`A.B.C.D/LEN`). Removed again when the deployment is torn down.
    pub fn add_bridge_namespace(&mut self, suffix: &str, addr: &str) -> Netns {
        let name = self.name();
        let ns = Netns::new(format!("cw-{name}-{suffix}"));
        let (temp_a, temp_b) = (
            format!("cw-{name}-{suffix}a"),
            format!("cw-{name}-{suffix}b"),
        );
        assert!(temp_a.len() <= 15, "interface name {temp_a} is too long");
        self.extra_namespaces.push(ns.name().to_owned());
        self.extra_host_links
            .extend([temp_a.clone(), temp_b.clone()]);
        let pubns = self.dep.netns(Site::Pub);
        let port = format!("p-{suffix}");
        ns.create().expect("creating the extra namespace");
        let host = |args: &[&str]| {
            let mut cmd = Command::new("ip");
            cmd.args(args);
            run(&mut cmd, WAIT).expect_success();
        };
        host(&[
            "link", "add", &temp_a, "type", "veth", "peer", "name", &temp_b,
        ]);
        host(&["link", "set", "dev", &temp_a, "netns", ns.name()]);
        host(&["link", "set", "dev", &temp_b, "netns", pubns.name()]);
        for (n, args) in [
            (&ns, vec!["link", "set", "dev", &temp_a, "name", "eth0"]),
            (&ns, vec!["addr", "add", addr, "dev", "eth0"]),
            (&ns, vec!["link", "set", "dev", "eth0", "up"]),
            (&pubns, vec!["link", "set", "dev", &temp_b, "name", &port]),
            (&pubns, vec!["link", "set", "dev", &port, "master", BRIDGE]),
            (&pubns, vec!["link", "set", "dev", &port, "up"]),
        ] {
            n.ip(&args)
                .unwrap_or_else(|e| panic!("wiring {}: {e:#}", ns.name()));
        }
        ns
    }

    /// Creates namespace `cw-NAME-SUFFIX` with only its loopback up, and a
    /// veth pair joining it (as `eth0`) to `peer` (as `peer_link`).
    /// Removed again when the deployment is torn down.
    pub fn add_namespace_behind(&mut self, suffix: &str, peer: &Netns, peer_link: &str) -> Netns {
        let ns = Netns::new(format!("cw-{}-{suffix}", self.name()));
        self.extra_namespaces.push(ns.name().to_owned());
        ns.create().expect("creating the extra namespace");
        ns.ip(&["link", "set", "dev", "lo", "up"])
            .expect("loopback up");
        peer.ip(&[
            "link",
            "add",
            peer_link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            ns.name(),
        ])
        .unwrap_or_else(|e| panic!("joining {} to {}: {e:#}", ns.name(), peer.name()));
        ns
    }

    /// Writes the files of an extra node that joins this deployment's
    /// control with `auth_key`: a state directory, a 0600 key file and a
    /// config under the deployment's root, named after `hostname`. The
    /// node listens on `endpoint`'s port, advertises `endpoint`, and uses
    /// TUN device `tun`. Start it with [`TestDeployment::start_extra_node`].
    pub fn write_extra_node(
        &self,
        hostname: &str,
        auth_key: &str,
        endpoint: std::net::SocketAddr,
        tun: &str,
        accept_routes: bool,
    ) -> ExtraNode {
        let paths = self.dep.paths();
        let root = paths.root();
        let state_dir = root.join(hostname);
        fs::create_dir_all(&state_dir).expect("the extra node's state dir");
        let key_file = root.join(format!("{hostname}.key"));
        write_secret_file(&key_file, &format!("{auth_key}\n"));
        let config = root.join(format!("{hostname}.toml"));
        let text = format!(
            r#"state_dir = "{state}"

[node]
control_url = "{url}"
control_public_key_file = "{pubkey}"
auth_key_file = "{key}"
hostname = "{hostname}"
listen_port = {port}
tun_name = "{tun}"
accept_routes = {accept_routes}
advertise_endpoints = ["{endpoint}"]
"#,
            state = state_dir.display(),
            url = local::appliance::control_url(),
            pubkey = paths.control_pub().display(),
            key = key_file.display(),
            port = endpoint.port(),
        );
        fs::write(&config, text).expect("writing the extra node's config");
        ExtraNode {
            hostname: hostname.to_owned(),
            state_dir,
            config,
            log: root.join(format!("{hostname}.log")),
        }
    }

    /// Starts an extra node written by [`TestDeployment::write_extra_node`]
    /// in namespace `ns`, recorded under its host name so the teardown
    /// stops it.
    pub fn start_extra_node(&self, node: &ExtraNode, ns: &Netns) -> ProcessRecord {
        let app = self.dep.appliance().expect("an appliance binary");
        let mut cmd = app.run_command(ns, &node.config);
        self.spawn_recorded(&node.hostname, ns.name(), &mut cmd, &node.log)
    }

    /// A file the teardown removes (e.g. a wireguard-go control socket).
    pub fn remove_on_teardown(&mut self, path: PathBuf) {
        self.extra_files.push(path);
    }

    /// `appliance set --exit-node CHOICE` on the client whose state
    /// directory is `state_dir`, asserting it succeeded.
    pub fn set_exit_node(&self, state_dir: &Path, choice: &str) {
        let mut cmd = self.command_in(Site::Cli, self.appliance_bin());
        cmd.arg("set")
            .arg("--state-dir")
            .arg(state_dir)
            .args(["--exit-node", choice]);
        let ran = run(&mut cmd, WAIT);
        assert!(ran.success(), "appliance set --exit-node {choice}: {ran}");
    }

    /// Writes `/etc/netns/NAMESPACE/FILE`, which `ip netns exec` mounts
    /// over `/etc/FILE` for the programs it starts there afterwards (e.g. a
    /// namespace's own `resolv.conf`); the host's `/etc/FILE` is untouched.
    /// The teardown removes the file and the directory.
    pub fn write_netns_file(&mut self, namespace: &str, file: &str, text: &str) {
        let dir = Path::new("/etc/netns").join(namespace);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(file);
        fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.extra_files.push(path);
        self.extra_dirs.push(dir);
    }

    /// Tears down and asserts: no namespace of the deployment is left, no
    /// recorded process runs, the state directory is gone.
    pub fn finish(mut self) {
        let leftovers = self.teardown();
        assert!(
            leftovers.is_empty(),
            "teardown left resources behind: {leftovers:?}"
        );
    }

    /// Stops and removes everything; returns what is still there.
    fn teardown(&mut self) -> Vec<String> {
        let mut left = Vec::new();
        for name in &self.extra_namespaces {
            let ns = Netns::new(name);
            if !ns.exists().unwrap_or(false) {
                continue;
            }
            for pid in ns.pids().unwrap_or_default() {
                stop_pid(pid, Duration::from_secs(3));
            }
            if let Err(e) = ns.delete() {
                left.push(format!("namespace {name} ({e:#})"));
            }
        }
        for link in &self.extra_host_links {
            let mut cmd = Command::new("ip");
            cmd.args(["link", "delete", "dev", link]);
            let _ = run(&mut cmd, WAIT);
        }
        for file in &self.extra_files {
            let _ = fs::remove_file(file);
        }
        for dir in &self.extra_dirs {
            if fs::remove_dir(dir).is_err() && dir.exists() {
                left.push(format!("directory {}", dir.display()));
            }
        }
        let records: Vec<(String, ProcessRecord)> = self
            .dep
            .state()
            .ok()
            .flatten()
            .map(|s| s.processes.into_iter().collect())
            .unwrap_or_default();
        if let Some(guard) = self.guard.take() {
            match guard.destroy() {
                Ok(report) => left.extend(report.leftovers),
                Err(e) => left.push(format!("destroy failed: {e:#}")),
            }
        }
        for (key, rec) in records {
            if rec.is_alive() {
                left.push(format!("process {key} (pid {})", rec.pid));
            }
        }
        let prefix = format!("cw-{}-", self.name());
        left.extend(
            namespaces_with_prefix(&prefix)
                .into_iter()
                .map(|n| format!("namespace {n}")),
        );
        for link in &self.extra_host_links {
            let mut cmd = Command::new("ip");
            cmd.args(["link", "show", "dev", link]);
            if run(&mut cmd, WAIT).success() {
                left.push(format!("host link {link}"));
            }
        }
        left
    }

    /// The tail of every log in the state directory, for failure messages.
    pub fn logs(&self) -> String {
        logs_of(self.dep.state_dir())
    }
}

impl Drop for TestDeployment {
    fn drop(&mut self) {
        if self.guard.is_none() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("--- logs of {} at failure\n{}", self.name(), self.logs());
        }
        let left = self.teardown();
        if left.is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!("teardown of {} left: {left:?}", self.name());
        } else {
            panic!("teardown of {} left: {left:?}", self.name());
        }
    }
}

/// The last lines of every `*.log` in `dir`.
fn logs_of(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    for path in paths {
        let tail = causeway_provisioner::local::process::log_tail(&path, 25);
        let _ = writeln!(out, "--- {}\n{tail}", path.display());
    }
    out
}

/// The peers of a status document.
pub fn peers(status: &Value) -> Vec<Value> {
    status["peers"].as_array().cloned().unwrap_or_default()
}

/// The peer called `name` in a status document.
pub fn peer<'a>(status: &'a Value, name: &str) -> anyhow::Result<&'a Value> {
    status["peers"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .with_context(|| format!("no peer {name:?} in status {status}"))
}

/// Whether the status lists `prefix` among its kernel routes.
pub fn has_kernel_route(status: &Value, prefix: &str) -> bool {
    status["kernel_routes"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| r == prefix))
}

/// The integer field `key` of `v`, or an error naming it.
pub fn u64_field(v: &Value, key: &str) -> anyhow::Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("field {key:?} missing or not a number in {v}"))
}

/// An extra node's files, from [`TestDeployment::write_extra_node`].
#[derive(Debug, Clone)]
pub struct ExtraNode {
    /// Its host name, also the key of its process record.
    pub hostname: String,
    /// Its state directory (for `appliance status --state-dir`).
    pub state_dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
}

/// Writes `text` to a new file with mode 0600.
pub fn write_secret_file(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Replaces the text of `path` with `edit(old text)`, keeping its mode.
pub fn rewrite_file(path: &Path, edit: impl FnOnce(&str) -> String) {
    let old =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let new = edit(&old);
    fs::write(path, new).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Whether an nftables JSON rule masquerades.
pub fn nft_rule_masquerades(rule: &Value) -> bool {
    rule["expr"]
        .as_array()
        .is_some_and(|es| es.iter().any(|e| e.get("masquerade").is_some()))
}

/// The IPv4 tailnet address (100.64.0.0/10) in a status document, without
/// its prefix length.
pub fn tailnet_ipv4(status: &Value) -> anyhow::Result<String> {
    status["addresses"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| s.split('/').next().unwrap_or(s))
                .find(|s| s.starts_with("100."))
        })
        .map(str::to_owned)
        .with_context(|| format!("no 100.64.0.0/10 address in status {status}"))
}
