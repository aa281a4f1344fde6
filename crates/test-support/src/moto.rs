//! moto in server mode: the AWS API for tests (EC2, S3, Secrets Manager,
//! IAM, Route 53, Route 53 Resolver, …), on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http;
use crate::ports::free_port;
use crate::server::ServerProcess;

/// The region every test uses.
pub const REGION: &str = "us-east-1";
/// moto's conventional test access key id.
pub const TEST_ACCESS_KEY_ID: &str = "testing";
/// moto's conventional test secret key (not a secret).
pub const TEST_SECRET_ACCESS_KEY: &str = "testing";

/// The environment an AWS client (SDK, CLI, Terraform's provider) needs to
/// talk to moto: test credentials, the region (both spellings), and no
/// instance-metadata probe (the SDKs otherwise try the link-local address
/// for credentials). The endpoint is left out: callers pass [`Moto::url`]
/// the way their client expects it.
pub const CLIENT_ENV: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY_ID),
    ("AWS_SECRET_ACCESS_KEY", TEST_SECRET_ACCESS_KEY),
    ("AWS_REGION", REGION),
    ("AWS_DEFAULT_REGION", REGION),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// The environment moto itself runs with: AWS-managed IAM policies exist
/// (otherwise only with this flag), and unknown instance types and images
/// are refused as AWS refuses them, so a typo fails the test.
pub const SERVER_ENV: [(&str, &str); 3] = [
    ("MOTO_IAM_LOAD_MANAGED_POLICIES", "true"),
    ("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "1"),
    ("MOTO_ENABLE_AMI_VALIDATION", "1"),
];

const INSTALL: &str = "install it with `pip install 'moto[server]'` (see .ci/install-deps)";

/// Makes the command that runs `program` where moto should run (for
/// example inside a network namespace).
type Wrap = Box<dyn Fn(&str) -> Command>;

/// How to start moto; [`Moto::start`] is the usual case.
pub struct MotoOptions {
    host: String,
    port: Option<u16>,
    log: Option<PathBuf>,
    deadline: Duration,
    wrap: Option<Wrap>,
}

impl Default for MotoOptions {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: None,
            log: None,
            deadline: Duration::from_secs(30),
            wrap: None,
        }
    }
}

impl MotoOptions {
    /// Listens on `host:port` instead of a free loopback port (a port the
    /// test owns: a restart on the same port, or a fresh namespace).
    pub fn listen(mut self, host: &str, port: u16) -> Self {
        self.host = host.to_owned();
        self.port = Some(port);
        self
    }

    /// Writes moto's output to `path` (default: a temporary file, shown
    /// when moto fails to start).
    pub fn log_to(mut self, path: &Path) -> Self {
        self.log = Some(path.to_owned());
        self
    }

    /// How long moto may take to answer (default 30 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Runs moto, and the `curl` that checks it answers, through `wrap`
    /// (e.g. `|p| netns.command(p)`). moto must then listen on a port the
    /// test chose ([`MotoOptions::listen`]): a port free here says nothing
    /// about another namespace.
    pub fn inside(mut self, wrap: impl Fn(&str) -> Command + 'static) -> Self {
        self.wrap = Some(Box::new(wrap));
        self
    }

    /// Starts moto and waits until `/moto-api/` answers 200. Panics, with
    /// moto's log, when it exits or does not answer within the deadline.
    pub fn start(self) -> Moto {
        assert!(
            self.wrap.is_none() || self.port.is_some(),
            "moto inside a wrapper needs a port chosen with listen()"
        );
        // A port picked here may be taken by another test before moto binds
        // it; moto then exits at once, and a new port is tried.
        let attempts = if self.port.is_some() { 1 } else { 3 };
        let mut last_log = String::new();
        for _ in 0..attempts {
            let port = self.port.unwrap_or_else(free_port);
            match self.try_start(port) {
                Ok(moto) => return moto,
                Err(log) => last_log = log,
            }
        }
        panic!("moto_server did not start: {last_log}");
    }

    /// Starts moto on `port`; why not when the port is taken or moto exits
    /// before answering.
    fn try_start(&self, port: u16) -> Result<Moto, String> {
        // Another server on the port would answer the readiness check in
        // moto's place: refuse a taken port before starting.
        if self.wrap.is_none() && std::net::TcpListener::bind((self.host.as_str(), port)).is_err() {
            return Err(format!("port {port} on {} is already in use", self.host));
        }
        let mut cmd = self.command("moto_server");
        cmd.args(["-H", &self.host, "-p", &port.to_string()])
            .envs(SERVER_ENV);
        let mut process =
            ServerProcess::spawn(&mut cmd, self.log.as_deref(), "moto_server", INSTALL);
        let begun = Instant::now();
        loop {
            if process.exited() {
                return Err(format!("it exited at once; its log:\n{}", process.log()));
            }
            if self.request(port, "GET", "/moto-api/") {
                break;
            }
            assert!(
                begun.elapsed() < self.deadline,
                "moto_server did not answer on port {port} within {} s; its log:\n{}",
                self.deadline.as_secs(),
                process.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Moto {
            url: format!("http://127.0.0.1:{port}"),
            port,
            curl: self.wrap.as_ref().map(|w| w("curl")),
            process,
        })
    }

    fn command(&self, program: &str) -> Command {
        match &self.wrap {
            Some(wrap) => wrap(program),
            None => Command::new(program),
        }
    }

    fn request(&self, port: u16, method: &str, path: &str) -> bool {
        match &self.wrap {
            Some(wrap) => curl_ok(wrap("curl"), port, method, path),
            None => http::status_ok(port, method, path),
        }
    }
}

/// `curl` (already wrapped) asking 127.0.0.1:`port` for `path`; true on 200.
fn curl_ok(mut curl: Command, port: u16, method: &str, path: &str) -> bool {
    curl.args(["-sf", "-o", "/dev/null", "--max-time", "5", "-X", method])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    curl.status().is_ok_and(|s| s.success())
}

/// A running moto_server; dropping it kills it, also when a test panics.
pub struct Moto {
    url: String,
    port: u16,
    /// The wrapped `curl`, cloned per request, when moto runs wrapped.
    curl: Option<Command>,
    process: ServerProcess,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Moto {
    /// moto on a free loopback port, with [`SERVER_ENV`].
    pub fn start() -> Self {
        MotoOptions::default().start()
    }

    /// Options for another place or log.
    pub fn options() -> MotoOptions {
        MotoOptions::default()
    }

    /// `http://127.0.0.1:PORT` (from inside the wrapper, when there is one).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port moto listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Wipes every resource of every service (`POST /moto-api/reset`), so
    /// tests sharing one server start from nothing.
    pub fn reset(&self) {
        let ok = match &self.curl {
            Some(curl) => curl_ok(clone_command(curl), self.port, "POST", "/moto-api/reset"),
            None => http::status_ok(self.port, "POST", "/moto-api/reset"),
        };
        assert!(
            ok,
            "resetting moto failed; its log:\n{}",
            self.process.log()
        );
    }

    /// moto's output so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// A copy of `cmd`'s program, arguments and environment (a `Command` runs
/// once, the wrapper is needed for every request).
fn clone_command(cmd: &Command) -> Command {
    let mut copy = Command::new(cmd.get_program());
    copy.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => copy.env(k, v),
            None => copy.env_remove(k),
        };
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets moto lists (S3 answers unsigned requests).
    fn bucket_listing(port: u16) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("moto listens");
        s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("request sent");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer read");
        answer
    }

    #[test]
    fn moto_answers_resets_and_dies_with_its_guard() {
        let moto = Moto::start();
        assert_eq!(moto.url(), format!("http://127.0.0.1:{}", moto.port()));
        assert!(http::status_ok(moto.port(), "PUT", "/causeway-test-bucket"));
        assert!(bucket_listing(moto.port()).contains("causeway-test-bucket"));

        moto.reset();

        assert!(!bucket_listing(moto.port()).contains("causeway-test-bucket"));
        let port = moto.port();
        drop(moto);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "moto still listens after its guard was dropped"
        );
    }

    #[test]
    fn moto_through_a_wrapper_is_checked_and_reset_through_it() {
        let port = free_port();
        // `env PROGRAM …` stands in for `ip netns exec NAME PROGRAM …`.
        let moto = Moto::options()
            .listen("127.0.0.1", port)
            .inside(|program| {
                let mut cmd = Command::new("env");
                cmd.arg(program);
                cmd
            })
            .start();
        assert!(http::status_ok(port, "PUT", "/causeway-wrapped-bucket"));

        moto.reset();

        assert!(!bucket_listing(port).contains("causeway-wrapped-bucket"));
    }

    #[test]
    fn a_taken_port_is_refused_before_moto_starts() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = taken.local_addr().expect("bound").port();

        let second = std::panic::catch_unwind(|| Moto::options().listen("127.0.0.1", port).start());

        let message = second.expect_err("the port is taken");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            text.contains(&format!("port {port} on 127.0.0.1 is already in use")),
            "{text}"
        );
    }
}
