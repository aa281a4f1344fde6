//! OpenSSH sessions recorded by `appliance record` as sshd's `ForceCommand`:
//! the real `ssh` client in one namespace logs in to Debian's `sshd` in
//! another; the session streams to the appliance's recorder role, which
//! stores it in S3 (moto), where it plays back in `asciinema cat`. With the
//! recorder gone, `--enforce` refuses the session before the command runs;
//! with the recorder frozen mid-session, it ends the session.
//!
//! Two namespaces joined by a veth pair (198.19.0.1 server, 198.19.0.2
//! client), no route anywhere else; moto and the recorder listen on the
//! server namespace's loopback. Needs root, `openssh-server`,
//! `openssh-client`, `moto_server`, `asciinema`, `script`, `curl`, and the
//! `appliance` binary (`cargo build -p causeway-appliance --bins`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::Duration;

use causeway_e2e::local::Netns;
use causeway_e2e::{KillOnDrop, WAIT, binary, run, unique_name, wait_until};
use causeway_test_support::Moto;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SERVER_ADDR: &str = "198.19.0.1";
const CLIENT_ADDR: &str = "198.19.0.2";
const MOTO_PORT: u16 = 5000;
const MOTO: &str = "http://127.0.0.1:5000";
const BUCKET: &str = "causeway-ssh-recordings";
const RECORDER: &str = "127.0.0.1:8080";
const NODE_ID: &str = "srv1";

/// The two namespaces and everything running in them; dropping it kills
/// every process inside and deletes both, also when a test panics.
struct SshLab {
    server: Netns,
    client: Netns,
    dir: tempfile::TempDir,
    moto: Option<Moto>,
    recorder: Option<KillOnDrop>,
    sshd: Option<KillOnDrop>,
}

impl SshLab {
    /// Namespaces, moto with the bucket, the recorder role, keys and sshd.
    fn start() -> Self {
        let name = unique_name();
        let mut lab = Self {
            server: Netns::new(format!("cw-{name}-srv")),
            client: Netns::new(format!("cw-{name}-cli")),
            dir: tempfile::tempdir().expect("tempdir"),
            moto: None,
            recorder: None,
            sshd: None,
        };
        lab.wire();
        let server = lab.server.clone();
        lab.moto = Some(
            Moto::options()
                .listen("127.0.0.1", MOTO_PORT)
                .log_to(&lab.path("moto.log"))
                .inside(move |program| server.command(program))
                .start(),
        );
        wait_until(WAIT, "the recordings bucket", || {
            lab.curl_in_server(&["-X", "PUT", &format!("{MOTO}/{BUCKET}")])
        });
        lab.start_recorder();
        lab.start_sshd();
        lab
    }

    /// Both namespaces, one veth pair between them, no other route.
    fn wire(&self) {
        for ns in [&self.server, &self.client] {
            ns.create()
                .unwrap_or_else(|e| panic!("creating namespace {}: {e:#}", ns.name()));
        }
        let mut veth = Command::new("ip");
        veth.args(["link", "add", "eth0", "netns", self.server.name()])
            .args([
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                self.client.name(),
            ]);
        run(&mut veth, WAIT).expect_success();
        for (ns, addr) in [(&self.server, SERVER_ADDR), (&self.client, CLIENT_ADDR)] {
            for args in [
                vec!["addr", "add", &format!("{addr}/24"), "dev", "eth0"],
                vec!["link", "set", "eth0", "up"],
            ] {
                ns.ip(&args)
                    .unwrap_or_else(|e| panic!("wiring {}: {e:#}", ns.name()));
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn_in_server(&self, cmd: &Command, what: &str) -> KillOnDrop {
        let mut inside = self.server.command(cmd.get_program());
        inside.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                inside.env(k, v);
            }
        }
        let log = fs::File::create(self.path(&format!("{what}.log"))).expect("log file");
        inside
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        KillOnDrop(
            inside
                .spawn()
                .unwrap_or_else(|e| panic!("starting {what}: {e}")),
        )
    }

    /// Runs curl in the server namespace (S3 requests signed for moto); Ok
    /// with its output on success.
    fn curl_in_server(&self, args: &[&str]) -> anyhow::Result<Vec<u8>> {
        let out = self
            .server
            .command("curl")
            .args(["-sS", "--fail", "--max-time", "5"])
            // Signed as moto's test credentials: anonymous reads of private objects get 403.
            .args([
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
                "testing:testing",
            ])
            .args(args)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    }

    fn start_recorder(&mut self) {
        let config = self.path("appliance.toml");
        fs::write(
            &config,
            format!(
                "state_dir = \"{state}\"\n\n[recorder]\nlisten = \"{RECORDER}\"\nallow = [\"127.0.0.0/8\"]\nspool_dir = \"{spool}\"\nack_interval_ms = 1000\n\n[recorder.storage]\nkind = \"s3\"\nbucket = \"{BUCKET}\"\nprefix = \"rec\"\nregion = \"us-east-1\"\nendpoint_url = \"{MOTO}\"\nforce_path_style = true\n",
                state = self.path("state").display(),
                spool = self.path("spool").display(),
            ),
        )
        .expect("writing the appliance config");
        let mut cmd = Command::new(binary("appliance"));
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        self.recorder = Some(self.spawn_in_server(&cmd, "recorder"));
        wait_until(WAIT, "the recorder listening", || {
            self.curl_in_server(&[
                "-I",
                "--http2-prior-knowledge",
                &format!("http://{RECORDER}/v2/record"),
            ])
        });
    }

    /// Stops the recorder role, as an outage would.
    fn stop_recorder(&mut self) {
        drop(self.recorder.take());
    }

    /// Freezes the recorder role (SIGSTOP): connections stay open, acks stop.
    fn freeze_recorder(&mut self) {
        let recorder = self.recorder.as_ref().expect("the recorder runs");
        // `ip netns exec` execs the program, so this is the appliance itself.
        let pid = Pid::from_raw(recorder.0.id() as i32);
        kill(pid, Signal::SIGSTOP).expect("stopping the recorder");
    }

    fn start_sshd(&mut self) {
        // sshd's privilege-separation directory.
        fs::create_dir_all("/run/sshd").expect("creating /run/sshd");
        for key in ["host_key", "client_key"] {
            let mut keygen = Command::new("ssh-keygen");
            keygen
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(self.path(key));
            run(&mut keygen, WAIT).expect_success();
        }
        fs::copy(self.path("client_key.pub"), self.path("authorized_keys"))
            .expect("authorizing the client key");
        let config = self.path("sshd_config");
        fs::write(
            &config,
            format!(
                "ListenAddress {SERVER_ADDR}:22\nHostKey {host_key}\nAuthorizedKeysFile {keys}\nPidFile {pid}\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\nForceCommand {appliance} record --recorder http://{RECORDER} --enforce --ack-timeout-ms 2000 --node-id {NODE_ID}\n",
                host_key = self.path("host_key").display(),
                keys = self.path("authorized_keys").display(),
                pid = self.path("sshd.pid").display(),
                appliance = binary("appliance").display(),
            ),
        )
        .expect("writing sshd_config");
        let mut sshd = Command::new("/usr/sbin/sshd");
        sshd.args(["-D", "-e", "-f"]).arg(&config);
        self.sshd = Some(self.spawn_in_server(&sshd, "sshd"));
        wait_until(WAIT, "sshd listening", || {
            let out = self.server.command("ss").args(["-ltnH"]).output()?;
            let listening = String::from_utf8_lossy(&out.stdout);
            anyhow::ensure!(
                listening.contains(&format!("{SERVER_ADDR}:22")),
                "{listening}"
            );
            Ok(())
        });
    }

    /// Runs the real ssh client in the client namespace.
    fn ssh(&self, remote_command: &str) -> std::process::Output {
        self.ssh_typing(Some(remote_command), b"")
    }

    /// Runs the real ssh client in the client namespace (`-tt`: a terminal
    /// on the server), typing `input`; without a command, a login shell.
    fn ssh_typing(&self, remote_command: Option<&str>, input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let mut child = self.ssh_spawn(remote_command);
        // Kept open until ssh ends: end of input could end the session early.
        let mut stdin = child.0.stdin.take().expect("stdin piped");
        stdin.write_all(input).expect("typing into ssh");
        let out = child.wait_output(WAIT, "ssh");
        drop(stdin);
        out
    }

    /// Starts the real ssh client (`-tt`) in the client namespace, every
    /// standard stream piped.
    fn ssh_spawn(&self, remote_command: Option<&str>) -> KillOnDrop {
        self.ssh_spawn_with("-tt", remote_command)
    }

    /// Starts the real ssh client with `tty_flag` (`-tt`: a terminal on the
    /// server; `-T`: none, only pipes).
    fn ssh_spawn_with(&self, tty_flag: &str, remote_command: Option<&str>) -> KillOnDrop {
        let child = self
            .client
            .command("ssh")
            .args([tty_flag, "-i"])
            .arg(self.path("client_key"))
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
                &format!("root@{SERVER_ADDR}"),
            ])
            .args(remote_command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh runs");
        KillOnDrop(child)
    }

    /// Keys in the bucket under `prefix`, from moto's ListObjectsV2 XML.
    fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let xml =
            self.curl_in_server(&[&format!("{MOTO}/{BUCKET}?list-type=2&prefix={prefix}")])?;
        let xml = String::from_utf8(xml)?;
        Ok(xml
            .split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect())
    }

    /// Asserts ssh ended with `code` and showed `expected`; then waits for
    /// the session's recording and returns its key (below the node's
    /// prefix) and text.
    fn recorded_session(
        &self,
        out: &std::process::Output,
        code: i32,
        expected: &str,
    ) -> (String, String) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.code() == Some(code) && stdout.contains(expected),
            "ssh: {:?}\nstdout: {stdout}\nstderr: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        let prefix = format!("rec/{NODE_ID}/");
        let keys = wait_until(WAIT, "the recording in the bucket", || {
            let keys = self.keys(&prefix)?;
            anyhow::ensure!(!keys.is_empty(), "no object under {prefix}");
            Ok(keys)
        });
        assert_eq!(keys.len(), 1, "one session, one recording: {keys:?}");
        let recording = self
            .curl_in_server(&[&format!("{MOTO}/{BUCKET}/{}", keys[0])])
            .expect("downloading the recording");
        let name = keys[0]
            .strip_prefix(&prefix)
            .expect("under the prefix")
            .to_owned();
        (name, String::from_utf8(recording).expect("UTF-8"))
    }

    fn logs(&self) -> String {
        ["moto", "recorder", "sshd"]
            .iter()
            .map(|what| {
                let text =
                    fs::read_to_string(self.path(&format!("{what}.log"))).unwrap_or_default();
                format!("--- {what} ---\n{text}")
            })
            .collect()
    }
}

impl Drop for SshLab {
    fn drop(&mut self) {
        drop((self.sshd.take(), self.recorder.take(), self.moto.take()));
        for ns in [&self.server, &self.client] {
            // Sessions sshd forked, or anything else left inside.
            for pid in ns.pids().unwrap_or_default() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            for _ in 0..50 {
                if ns.pids().map_or(true, |p| p.is_empty()) {
                    break;
                }
                sleep(Duration::from_millis(100));
            }
            if ns.exists().unwrap_or(false)
                && let Err(e) = ns.delete()
            {
                eprintln!("deleting namespace {}: {e:#}", ns.name());
            }
        }
    }
}

/// The data of a recording's output events, concatenated.
fn output_of(recording: &str) -> String {
    recording
        .lines()
        .skip(1)
        .filter_map(|line| serde_json::from_str::<(f64, String, String)>(line).ok())
        .filter(|(_, code, _)| code == "o")
        .map(|(_, _, data)| data)
        .collect()
}

/// `asciinema cat` of `file` under `script` (it insists on a terminal).
fn asciinema_cat(file: &Path) -> std::process::Output {
    Command::new("script")
        .args([
            "-qec",
            &format!("asciinema cat '{}'", file.display()),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux) runs")
}

#[test]
fn an_ssh_session_is_recorded_to_s3_and_plays_back() {
    let lab = SshLab::start();
    let marker = "some-marker-4d1f";
    let out = lab.ssh(&format!("echo {marker}"));
    let (name, text) = lab.recorded_session(&out, 0, marker);
    // <node-id>/<YYYYMMDDTHHMMSSZ>-<client-ip>-<port>-<server-ip>-22-<nonce>.cast
    let (stamp, connection) = name.split_once('-').expect("timestamp-connection");
    assert_eq!(stamp.len(), 16, "a UTC timestamp: {name}");
    let (connection, nonce) = connection
        .strip_suffix(".cast")
        .and_then(|c| c.rsplit_once('-'))
        .expect("connection-nonce.cast");
    assert!(
        nonce.len() == 16 && nonce.bytes().all(|b| b.is_ascii_hexdigit()),
        "a 64-bit random nonce: {name}"
    );
    assert!(
        connection.starts_with(&format!("{CLIENT_ADDR}-"))
            && connection.ends_with(&format!("-{SERVER_ADDR}-22")),
        "the connection from SSH_CONNECTION: {name}"
    );
    let header: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a header")).expect("JSON header");
    assert_eq!(header["srcNodeID"], NODE_ID);
    assert_eq!(header["srcNode"], CLIENT_ADDR);
    assert_eq!(header["sshUser"], "root");
    assert_eq!(header["command"], format!("echo {marker}"));
    // The header carries the marker too (as the command): look at the output events.
    assert!(
        output_of(&text).contains(&format!("{marker}\r\n")),
        "the output is in the recording:\n{text}"
    );

    let file = lab.path("session.cast");
    fs::write(&file, &text).expect("writing the recording");
    let played = asciinema_cat(&file);
    let shown = String::from_utf8_lossy(&played.stdout);
    assert!(
        played.status.success() && shown.contains(marker),
        "asciinema cat: {:?}\n{shown}",
        played.status
    );
}

#[test]
fn with_the_recorder_down_enforce_refuses_the_session() {
    let mut lab = SshLab::start();
    lab.stop_recorder();
    let ran = lab.path("ran");
    let out = lab.ssh(&format!("touch {}", ran.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "refused with status 1; stdout: {stdout}\n{}",
        lab.logs()
    );
    assert!(
        stdout.contains("This session must be recorded, but the recorder cannot record it")
            && stdout.contains("The session was refused."),
        "the user sees why: {stdout}"
    );
    assert!(!ran.exists(), "the command did not run");
    assert!(
        lab.keys(&format!("rec/{NODE_ID}/"))
            .expect("listing")
            .is_empty(),
        "nothing was stored"
    );
}

#[test]
fn an_interactive_login_shell_is_recorded_with_what_was_typed() {
    let lab = SshLab::start();
    // The shell computes the marker, so it is in the output only if the
    // typed line reached the shell and ran.
    let out = lab.ssh_typing(None, b"echo $((6*7))-typed\nexit 3\n");
    let (_, text) = lab.recorded_session(&out, 3, "42-typed");
    let header: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("a header")).expect("JSON header");
    assert_eq!(
        header.get("command"),
        None,
        "a login shell has no command: {header}"
    );
    assert!(
        output_of(&text).contains("42-typed"),
        "the shell's answer is recorded:\n{text}"
    );
}

#[test]
fn when_acks_stop_enforce_ends_the_session() {
    use std::io::Read;
    let mut lab = SshLab::start();
    let mut ssh = lab.ssh_spawn(Some(
        "echo started; while :; do sleep 0.2; echo still-ticking; done",
    ));
    let mut stdout = ssh.0.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut seen = String::new();
    while !seen.contains("started") {
        let chunk = rx.recv_timeout(WAIT).unwrap_or_else(|e| {
            panic!(
                "no `started` from ssh ({e}); so far: {seen}\n{}",
                lab.logs()
            )
        });
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    lab.freeze_recorder();
    let out = ssh.wait_output(WAIT, "ssh after the recorder froze");
    seen.extend(
        rx.try_iter()
            .map(|c| String::from_utf8_lossy(&c).into_owned()),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "ended with status 1; saw: {seen}"
    );
    assert!(
        seen.contains("This session must be recorded, but recording failed: the recorder acknowledged nothing for")
            && seen.contains("The session was ended."),
        "the user sees why: {seen}"
    );
    // The session's shell loop was killed, not left running unrecorded.
    wait_until(
        Duration::from_secs(5),
        "the session's commands gone",
        || {
            let left: Vec<i32> = lab
                .server
                .pids()?
                .into_iter()
                .filter(|pid| {
                    fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("still-ticking"))
                })
                .collect();
            anyhow::ensure!(left.is_empty(), "still running: {left:?}");
            Ok(())
        },
    );
}

#[test]
fn a_session_without_a_terminal_is_recorded_and_gets_its_input() {
    use std::io::Write;
    let lab = SshLab::start();
    // `ssh -T`: sshd gives the command pipes, not a terminal.
    let mut ssh = lab.ssh_spawn_with("-T", Some("read line; echo got-$line; tr a-z A-Z"));
    let mut stdin = ssh.0.stdin.take().expect("stdin piped");
    stdin
        .write_all(b"first\npiped input\n")
        .expect("writing to ssh");
    // End of input must reach the command (as ^D on its terminal) for `tr` to end.
    drop(stdin);
    let out = ssh.wait_output(WAIT, "ssh -T");
    let (_, text) = lab.recorded_session(&out, 0, "PIPED INPUT");
    let output = output_of(&text);
    assert!(
        output.contains("got-first") && output.contains("PIPED INPUT"),
        "the command's answers are recorded:\n{text}"
    );
}
