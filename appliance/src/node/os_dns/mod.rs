//! Points this machine at the node resolver while the appliance runs
//! (`node.accept_dns`, with `node.dns_resolver`), and undoes it when it
//! stops, or, after a crash, when it next starts.
//!
//! What is changed is decided by the network namespace the appliance runs
//! in, never by the path `/etc/resolv.conf` alone: under `ip netns exec
//! NAME` that path is the namespace's own file only if
//! `/etc/netns/NAME/resolv.conf` existed when the process started, and is
//! otherwise the host's.
//! - In a namespace named under `/run/netns`: the file
//!   `/etc/netns/NAME/resolv.conf` (created if missing, and removed again
//!   on stop), which every later `ip netns exec NAME` mounts over
//!   `/etc/resolv.conf` ([`resolv_conf`]).
//! - In the first process's namespace (the machine itself): systemd-resolved
//!   when `/etc/resolv.conf` is a link to its files and `resolvectl` is
//!   installed ([`resolved`]); else the file `/etc/resolv.conf`, unless it
//!   is a link to something else (another program owns it), in which case
//!   nothing is touched.
//! - In any other namespace, or where the first process's namespace
//!   cannot be read: nothing, and the status says why.

mod resolv_conf;
mod resolved;

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use self::resolv_conf::ResolvConf;
pub use self::resolv_conf::UPSTREAM;
use self::resolved::ResolvedLink;

/// The machine's own file, and, inside a named namespace, the host's.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The host's file seen from any mount namespace (the first process's
/// root), for a named namespace that has no file of its own.
const HOST_RESOLV_CONF_FROM_INIT: &str = "/proc/1/root/etc/resolv.conf";
/// Where `ip netns add` names namespaces.
const NAMED_NAMESPACES: &str = "/run/netns";
/// Where `ip netns exec` finds a namespace's own `/etc` files.
const NAMESPACE_ETC: &str = "/etc/netns";

/// Which file belongs to this machine's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Write this file.
    File {
        path: PathBuf,
        /// What the namespace's processes resolve with when `path` does
        /// not exist: the first of these that can be read and that we did
        /// not write (the host's file, seen from the first process, or
        /// from this process when `ip netns exec` mounted nothing over it).
        fallback: Vec<PathBuf>,
    },
    /// systemd-resolved owns `/etc/resolv.conf`: set the TUN device's
    /// DNS through this `resolvectl`.
    Resolved { resolvectl: PathBuf },
    /// Leave DNS alone, for this reason.
    Unmanaged(String),
}

impl Target {
    /// Finds the file for the network namespace this process is in.
    pub fn locate() -> Self {
        match locate() {
            Ok(target) => target,
            Err(e) => Self::Unmanaged(format!("{e:#}")),
        }
    }
}

fn locate() -> anyhow::Result<Target> {
    let own = namespace_id(Path::new("/proc/thread-self/ns/net"))?;
    let named = fs::read_dir(NAMED_NAMESPACES)
        .into_iter()
        .flatten()
        .flatten();
    for entry in named {
        if namespace_id(&entry.path()).ok() == Some(own) {
            let name = entry.file_name();
            return Ok(Target::File {
                path: Path::new(NAMESPACE_ETC).join(&name).join("resolv.conf"),
                fallback: vec![
                    PathBuf::from(HOST_RESOLV_CONF_FROM_INIT),
                    PathBuf::from(HOST_RESOLV_CONF),
                ],
            });
        }
    }
    // Where the first process cannot be inspected (some sandboxes), this
    // cannot be told to be the machine's own namespace: touch nothing.
    if own == namespace_id(Path::new("/proc/1/ns/net"))? {
        let host = Path::new(HOST_RESOLV_CONF);
        if let Ok(link) = fs::read_link(host) {
            let resolved = link.to_string_lossy().contains("systemd/resolve");
            return Ok(match find_in_path("resolvectl") {
                Some(resolvectl) if resolved => Target::Resolved { resolvectl },
                _ => Target::Unmanaged(format!(
                    "{HOST_RESOLV_CONF} is a link to {}: another program manages it{}",
                    link.display(),
                    if resolved {
                        ", and resolvectl is not installed"
                    } else {
                        ""
                    }
                )),
            });
        }
        return Ok(Target::File {
            path: host.to_owned(),
            fallback: vec![],
        });
    }
    Ok(Target::Unmanaged(format!(
        "this network namespace has no name under {NAMED_NAMESPACES}, so no resolv.conf is its own"
    )))
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A namespace's identity: the device and inode of its nsfs file.
fn namespace_id(path: &Path) -> anyhow::Result<(u64, u64)> {
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((meta.dev(), meta.ino()))
}

/// What the node resolver answers for, as the OS should know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// The tailnet's domain (searched first in `resolv.conf`).
    pub tailnet_domain: Option<String>,
    /// The split-DNS domains.
    pub split: Vec<String>,
    /// Reverse zones of the tailnet's addresses (routed to the node
    /// resolver by systemd-resolved; `resolv.conf` sends it everything).
    pub reverse: Vec<String>,
}

impl Names {
    /// Every domain the node resolver answers for.
    fn domains(&self) -> Vec<String> {
        self.tailnet_domain
            .iter()
            .chain(&self.split)
            .chain(&self.reverse)
            .cloned()
            .collect()
    }
}

/// The machine's DNS, pointed at the node resolver until [`OsDns::restore`].
pub enum OsDns {
    /// A `resolv.conf` we wrote.
    File(ResolvConf),
    /// systemd-resolved's settings for the TUN device.
    Resolved(ResolvedLink),
}

impl OsDns {
    /// Undoes a `resolv.conf` takeover an earlier run left behind (a
    /// crash), if any. (systemd-resolved forgets a link's settings by
    /// itself when the link goes.)
    pub fn recover(state_dir: &Path) -> anyhow::Result<()> {
        ResolvConf::recover(state_dir)
    }

    /// Points what `target` names at `resolver`.
    pub fn take_over(
        state_dir: &Path,
        target: &Target,
        tun: &str,
        resolver: IpAddr,
        names: &Names,
    ) -> anyhow::Result<Self> {
        match target {
            Target::File { path, fallback } => ResolvConf::take_over(
                state_dir,
                path,
                fallback,
                resolver,
                names.tailnet_domain.as_deref(),
            )
            .map(Self::File),
            Target::Resolved { resolvectl } => {
                ResolvedLink::take_over(resolvectl, tun, resolver, &names.domains())
                    .map(Self::Resolved)
            }
            Target::Unmanaged(reason) => anyhow::bail!("{reason}"),
        }
    }

    /// What the status shows.
    pub fn describe(&self, resolver: IpAddr) -> String {
        match self {
            Self::File(file) => format!("{} -> {resolver}", file.path().display()),
            Self::Resolved(link) => link.describe(),
        }
    }

    /// Follows a change of the names the resolver answers for.
    pub fn set_names(&mut self, names: &Names) -> anyhow::Result<()> {
        match self {
            Self::File(file) => file.set_domain(names.tailnet_domain.as_deref()),
            Self::Resolved(link) => link.set_domains(&names.domains()),
        }
    }

    /// Undoes the takeover.
    pub fn restore(self) -> anyhow::Result<()> {
        match self {
            Self::File(file) => file.restore(),
            Self::Resolved(link) => link.restore(),
        }
    }

    /// Whether the forwarder's upstreams come from the saved copy.
    pub fn saved_upstreams(&self) -> bool {
        matches!(self, Self::File(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `locate` on a thread of its own that first enters a network
    /// namespace (a thread's namespace is its own; the test process's
    /// other threads stay where they are).
    fn locate_in(enter: impl FnOnce() + Send + 'static) -> Target {
        std::thread::spawn(move || {
            enter();
            Target::locate()
        })
        .join()
        .expect("the locating thread")
    }

    #[test]
    fn a_named_namespace_gets_its_own_file_and_an_unnamed_one_none() {
        use nix::sched::CloneFlags;
        let name = format!("cw-osdns-{}", std::process::id());
        let added = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("running ip");
        assert!(added.success(), "ip netns add {name}");
        let handle = Path::new(NAMED_NAMESPACES).join(&name);
        let named = locate_in(move || {
            let ns = fs::File::open(handle).expect("the namespace");
            nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).expect("setns");
        });
        let unnamed = locate_in(|| {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare");
        });
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .status();

        assert_eq!(
            named,
            Target::File {
                path: Path::new(NAMESPACE_ETC).join(&name).join("resolv.conf"),
                fallback: vec![
                    PathBuf::from(HOST_RESOLV_CONF_FROM_INIT),
                    PathBuf::from(HOST_RESOLV_CONF)
                ],
            }
        );
        // "No name", or, where the first process cannot be inspected,
        // the reason for that; never a file.
        assert!(
            matches!(&unnamed, Target::Unmanaged(reason) if reason.contains("no name") || reason.contains("/proc/1/ns/net")),
            "{unnamed:?}"
        );
    }
}
