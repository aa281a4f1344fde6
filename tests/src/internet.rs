//! "The internet" for exit-node tests: a namespace on the public bridge
//! (198.18.0.250, fd18::250) that holds 198.18.100.10 and 2001:db8:100::10
//! with an HTTP server on port 8000 answering every GET with the caller's
//! address, and the client-side helpers that use it.

use std::path::{Path, PathBuf};

use crate::TestDeployment;
use crate::local::{Netns, Site};

/// The echo server's IPv4 "internet" address.
pub const INTERNET_URL: &str = "http://198.18.100.10:8000/";
/// The same server's IPv6 "internet" address.
pub const INTERNET_URL_V6: &str = "http://[2001:db8:100::10]:8000/";
/// The internet namespace's address on the public bridge: the gateway
/// exit nodes (and a leaking client) reach the internet through.
pub const GATEWAY: &str = "198.18.0.250";

/// The echo server's port.
pub const ECHO_PORT: &str = "8000";

/// The internet namespace and the log of every caller the server saw.
pub struct Internet {
    /// The namespace (`cw-NAME-inet`).
    pub ns: Netns,
    /// One line per request: the caller's address.
    pub callers: PathBuf,
}

/// Creates the internet namespace and starts its echo server (stopped and
/// removed with the deployment).
pub fn start_internet(t: &mut TestDeployment) -> Internet {
    let root = t.dep().paths().root().to_owned();
    let ns = t.add_bridge_namespace("inet", &format!("{GATEWAY}/24"));
    for args in [
        &["addr", "add", "198.18.100.10/32", "dev", "lo"][..],
        &["link", "set", "dev", "lo", "up"],
        &["addr", "add", "2001:db8:100::10/128", "dev", "lo"],
        &["addr", "add", "fd18::250/64", "dev", "eth0", "nodad"],
    ] {
        ns.ip(args)
            .unwrap_or_else(|e| panic!("internet namespace: ip {args:?}: {e:#}"));
    }
    let script = root.join("echo.py");
    std::fs::write(&script, crate::local::services::ECHO_SERVER_PY)
        .expect("writing the echo server");
    let callers = root.join("callers.log");
    let mut server = ns.command("python3");
    server.arg(&script).arg(&callers).arg(ECHO_PORT);
    t.spawn_recorded("echo", ns.name(), &mut server, &root.join("echo.log"));
    Internet { ns, callers }
}

/// The body of a GET from the client (the address the server saw).
pub fn fetch(t: &TestDeployment, url: &str) -> anyhow::Result<String> {
    let ran = t.curl(Site::Cli, url, 2);
    anyhow::ensure!(ran.success(), "{ran}");
    Ok(ran.stdout.trim().to_owned())
}

/// `seen` if it is `want`, else an error naming both.
pub fn expect_from(seen: String, want: &str) -> anyhow::Result<String> {
    anyhow::ensure!(seen == want, "the server saw {seen}, expected {want}");
    Ok(seen)
}

/// How many requests the server logged from `addr`.
pub fn callers_from(log: &Path, addr: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == addr)
        .count()
}

/// dnsmasq in `ns`, in the foreground, answering only `name` (and its
/// subdomains) with `answer` on `listen`: no upstream, no hosts file.
/// Callers add options (query logging) and start it recorded.
pub fn dnsmasq(ns: &Netns, listen: &str, name: &str, answer: &str) -> std::process::Command {
    let mut cmd = ns.command("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--user=root",
        "--pid-file=",
        "--bind-interfaces",
        &format!("--listen-address={listen}"),
        &format!("--address=/{name}/{answer}"),
    ]);
    cmd
}
