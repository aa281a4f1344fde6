//! The deployment's state directory: its layout, `state.json`, and secret
//! files. Secrets (auth keys, the database password) live only in 0600
//! files; `state.json` names those files but never holds their contents.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::process::ProcessRecord;

/// Version of the `state.json` format.
pub const STATE_VERSION: u32 = 1;

/// A node role run by the appliance in a local deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Node {
    /// The subnet router.
    Router,
    /// With `--ha`: the second subnet router, for the same VPC subnet.
    Router2,
    /// With `--role exit-node`: the exit node (host name `exit`).
    Exit,
    /// With `--role app-connector`: the app connector (host name
    /// `connector`).
    Connector,
    /// The client device.
    Client,
}

impl Node {
    /// Its name in paths, process keys and hostnames.
    pub fn as_str(self) -> &'static str {
        match self {
            Node::Router => "router",
            Node::Router2 => "router2",
            Node::Exit => "exit",
            Node::Connector => "connector",
            Node::Client => "client",
        }
    }

    /// Whether it is a subnet router.
    pub fn is_router(self) -> bool {
        match self {
            Node::Router | Node::Router2 => true,
            Node::Exit | Node::Connector | Node::Client => false,
        }
    }
}

/// Paths inside a deployment's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// The state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The lock file, beside the directory (it outlives a destroy's removal
    /// of the directory until the lock is released).
    pub fn lock_file(&self) -> PathBuf {
        let mut name = self.root.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        self.root.with_file_name(name)
    }

    /// `state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// PostgreSQL's directory (owned by `postgres`): socket and log.
    pub fn pg_dir(&self) -> PathBuf {
        self.root.join("postgres")
    }

    /// PostgreSQL's data directory.
    pub fn pg_data(&self) -> PathBuf {
        self.pg_dir().join("data")
    }

    /// PostgreSQL's server log.
    pub fn pg_log(&self) -> PathBuf {
        self.pg_dir().join("postgres.log")
    }

    /// The `causeway` database user's password (0600).
    pub fn pg_password(&self) -> PathBuf {
        self.root.join("postgres.password")
    }

    /// The HTTP server's document root.
    pub fn www(&self) -> PathBuf {
        self.root.join("www")
    }

    /// The HTTP server's log.
    pub fn http_log(&self) -> PathBuf {
        self.root.join("http.log")
    }

    /// The VPC resolver's log.
    pub fn dns_log(&self) -> PathBuf {
        self.root.join("dns.log")
    }

    /// With `--role app-connector`: the apps' resolver's log.
    pub fn apps_dns_log(&self) -> PathBuf {
        self.root.join("apps-dns.log")
    }

    /// With `--role exit-node`: the echo server's script.
    pub fn echo_script(&self) -> PathBuf {
        self.root.join("echo_server.py")
    }

    /// With `--role exit-node`: the address of every caller of the echo
    /// server, one a line.
    pub fn echo_callers(&self) -> PathBuf {
        self.root.join("echo-callers.log")
    }

    /// With `--role exit-node`: the echo server's own log.
    pub fn echo_log(&self) -> PathBuf {
        self.root.join("echo.log")
    }

    /// With `--role via6`: the address of every caller of site 2's echo
    /// server, one a line.
    pub fn site2_echo_callers(&self) -> PathBuf {
        self.root.join("site2-echo-callers.log")
    }

    /// With `--role via6`: site 2's echo server's own log.
    pub fn site2_echo_log(&self) -> PathBuf {
        self.root.join("site2-echo.log")
    }

    /// Control's state directory (keys, database, admin token).
    pub fn control_dir(&self) -> PathBuf {
        self.root.join("control")
    }

    /// Control's config file.
    pub fn control_config(&self) -> PathBuf {
        self.root.join("control.toml")
    }

    /// Control's policy (huJSON).
    pub fn policy(&self) -> PathBuf {
        self.root.join("policy.hujson")
    }

    /// The admin token `appliance control init` writes.
    pub fn admin_token(&self) -> PathBuf {
        self.control_dir().join("admin.token")
    }

    /// Control's public key `appliance control init` writes.
    pub fn control_pub(&self) -> PathBuf {
        self.control_dir().join("control.pub")
    }

    /// Control's log.
    pub fn control_log(&self) -> PathBuf {
        self.root.join("control.log")
    }

    /// A node's state directory.
    pub fn node_dir(&self, node: Node) -> PathBuf {
        self.root.join(node.as_str())
    }

    /// A node's config file.
    pub fn node_config(&self, node: Node) -> PathBuf {
        self.root.join(format!("{}.toml", node.as_str()))
    }

    /// A node's auth key (0600).
    pub fn node_auth_key(&self, node: Node) -> PathBuf {
        self.root.join(format!("{}.authkey", node.as_str()))
    }

    /// A node's log.
    pub fn node_log(&self, node: Node) -> PathBuf {
        self.root.join(format!("{}.log", node.as_str()))
    }
}

/// An exclusive lock on a deployment (`STATE_DIR.lock`, next to the state
/// directory), so two provisioners never deploy and destroy the same
/// deployment at once. Released on drop.
#[derive(Debug)]
pub struct DeploymentLock {
    _lock: nix::fcntl::Flock<fs::File>,
}

impl DeploymentLock {
    /// Takes the lock, failing at once if another provisioner holds it.
    pub fn acquire(dir: &StateDir) -> anyhow::Result<Self> {
        let path = dir.lock_file();
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| errno)
            .with_context(|| {
                format!(
                    "another provisioner is working on this deployment (lock {} is held)",
                    path.display()
                )
            })?;
        Ok(Self { _lock: lock })
    }
}

/// `state.json`: what a deployment created, so `status` and `destroy` find
/// it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentState {
    /// Format version.
    pub version: u32,
    /// Deployment name.
    pub name: String,
    /// Always `local` here.
    pub cloud: String,
    /// The deployed role.
    pub role: String,
    /// Two subnet routers (`--ha`). Absent in older files: one router.
    #[serde(default)]
    pub ha: bool,
    /// The routers masquerade the client (`--no-snat` turns it off).
    /// Absent in older files: on.
    #[serde(default = "snat_default")]
    pub snat: bool,
    /// Namespaces of the deployment.
    pub namespaces: Vec<String>,
    /// Processes started, by key (`postgres`, `http`, `echo`, `control`,
    /// `router`, `router2`, `exit`, `client`): each node's pid is
    /// `processes.KEY.pid`.
    pub processes: BTreeMap<String, ProcessRecord>,
    /// PostgreSQL's data directory.
    pub postgres_data_dir: PathBuf,
    /// Config files written, by key.
    pub configs: BTreeMap<String, PathBuf>,
    /// Secret files (paths only), by key.
    pub secret_files: BTreeMap<String, PathBuf>,
}

fn snat_default() -> bool {
    true
}

impl DeploymentState {
    /// Reads `state.json`; `Ok(None)` if there is none.
    pub fn load(dir: &StateDir) -> anyhow::Result<Option<Self>> {
        let path = dir.state_file();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(state))
    }

    /// Writes `state.json` atomically (temporary file, then rename).
    pub fn save(&self, dir: &StateDir) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self).context("serialising state")?;
        write_atomic(&dir.state_file(), json.as_bytes(), 0o644)
    }
}

/// A secret read from a 0600 file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value, for handing to a child process (environment or stdin).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads a secret file, trimming surrounding whitespace.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading secret file {}", path.display()))?;
        Ok(Self(text.trim().to_owned()))
    }

    /// Writes the secret to a new 0600 file (atomically).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        write_atomic(path, format!("{}\n", self.0).as_bytes(), 0o600)
    }

    /// A fresh random secret: 32 hex digits from the kernel's CSPRNG.
    pub fn generate() -> anyhow::Result<Self> {
        let mut bytes = [0u8; 16];
        let mut urandom = fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
        std::io::Read::read_exact(&mut urandom, &mut bytes).context("reading /dev/urandom")?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Writes `bytes` to `path` through a temporary file created with `mode`,
/// then renames it into place, so readers never see a partial file and a
/// secret is never briefly world-readable.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting permissions of {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))
}

/// Writes `text` to `path` only if it differs; returns whether it changed.
pub fn write_if_changed(path: &Path, text: &str, mode: u32) -> anyhow::Result<bool> {
    if fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    write_atomic(path, text.as_bytes(), mode)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_files_are_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = Secret::generate().expect("urandom");
        assert_eq!(secret.expose().len(), 32);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        let path = dir.path().join("key");
        secret.write(&path).expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Secret::read(&path).expect("read"), secret);
    }

    #[test]
    fn state_round_trips_and_write_if_changed_detects_no_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sd = StateDir::new(dir.path());
        assert_eq!(DeploymentState::load(&sd).expect("load"), None);
        let state = DeploymentState {
            version: STATE_VERSION,
            name: "t1".into(),
            cloud: "local".into(),
            role: "subnet-router".into(),
            ha: true,
            snat: true,
            namespaces: vec!["cw-t1-pub".into()],
            processes: BTreeMap::new(),
            postgres_data_dir: sd.pg_data(),
            configs: BTreeMap::new(),
            secret_files: BTreeMap::new(),
        };
        state.save(&sd).expect("save");
        assert_eq!(DeploymentState::load(&sd).expect("load"), Some(state));
        let cfg = dir.path().join("x.toml");
        assert!(write_if_changed(&cfg, "a = 1\n", 0o644).expect("write"));
        assert!(!write_if_changed(&cfg, "a = 1\n", 0o644).expect("write"));
    }
}
