//! A small adapter over iproute2's `ip` for network namespaces and links.
//! Shelling out keeps the provisioner free of netlink code; the appliance
//! has its own netlink adapters where it matters.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use serde::Deserialize;

use super::exec;

/// A named network namespace (`/run/netns/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

/// One interface as `ip -j addr show` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub ifname: String,
    /// Flags such as `UP`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// The bridge this interface is a port of.
    #[serde(default)]
    pub master: Option<String>,
    /// Addresses.
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

/// One address of an interface.
#[derive(Debug, Clone, Deserialize)]
pub struct AddrInfo {
    /// `inet` or `inet6`.
    pub family: String,
    /// The address.
    pub local: String,
    /// The prefix length.
    pub prefixlen: u8,
}

impl Interface {
    /// Whether the interface is administratively up.
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }

    /// Whether it carries `addr` (`A.B.C.D/LEN`).
    pub fn has_addr(&self, addr: &str) -> bool {
        self.addr_info
            .iter()
            .any(|a| format!("{}/{}", a.local, a.prefixlen) == addr)
    }
}

impl Netns {
    /// The namespace called `name` (which may not exist yet).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Names of all named namespaces on this machine.
    pub fn list() -> anyhow::Result<Vec<String>> {
        let out = exec::run(Command::new("ip").args(["netns", "list"]))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// Whether it exists.
    pub fn exists(&self) -> anyhow::Result<bool> {
        Ok(Self::list()?.contains(&self.name))
    }

    /// Creates it and brings its loopback up. It gets no other interface and
    /// no route until the caller adds them.
    pub fn create(&self) -> anyhow::Result<()> {
        exec::run(Command::new("ip").args(["netns", "add", &self.name]))?;
        self.ip(&["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Deletes it. Processes still inside keep the namespace alive, so the
    /// caller stops them first.
    pub fn delete(&self) -> anyhow::Result<()> {
        exec::run(Command::new("ip").args(["netns", "delete", &self.name]))?;
        Ok(())
    }

    /// Removes the `/etc/netns/NAME/resolv.conf` an appliance in this
    /// namespace wrote (`node.accept_dns`) and could not put back (it was
    /// killed), and the directory if that leaves it empty. A file anyone
    /// else wrote is kept. Returns whether something was removed.
    pub fn remove_appliance_resolv_conf(&self) -> anyhow::Result<bool> {
        let dir = Path::new("/etc/netns").join(&self.name);
        let file = dir.join("resolv.conf");
        match std::fs::read(&file) {
            Ok(bytes) if bytes.starts_with(causeway_dns::WRITTEN_BY.as_bytes()) => {
                std::fs::remove_file(&file)
                    .with_context(|| format!("removing {}", file.display()))?;
                let _ = std::fs::remove_dir(&dir);
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
        }
    }

    /// Runs `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        exec::run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Interfaces and their addresses.
    pub fn interfaces(&self) -> anyhow::Result<Vec<Interface>> {
        let out = self.ip(&["-j", "addr", "show"])?;
        serde_json::from_str(&out)
            .with_context(|| format!("parsing `ip -j addr show` of namespace {}", self.name))
    }

    /// Whether an interface called `ifname` exists here.
    pub fn has_link(&self, ifname: &str) -> anyhow::Result<bool> {
        Ok(self.interfaces()?.iter().any(|i| i.ifname == ifname))
    }

    /// Routes of the main table, one per line, as `ip route show` prints them.
    pub fn routes(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ip(&["route", "show"])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// A command that runs `program` inside the namespace
    /// (`ip netns exec NAME program`), with the provisioner's own
    /// environment variables removed.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        exec::scrub_env(&mut cmd);
        cmd
    }

    /// Pids of the processes inside.
    pub fn pids(&self) -> anyhow::Result<Vec<i32>> {
        let out = exec::run(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }
}

/// Links of the host namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostLinks;

impl HostLinks {
    /// Whether the host namespace has a link called `ifname`.
    pub fn exists(self, ifname: &str) -> anyhow::Result<bool> {
        let out = exec::output(
            Command::new("ip").args(["link", "show", "dev", ifname]),
            None,
        )?;
        Ok(out.status.success())
    }

    /// Deletes host link `ifname` if it exists (deleting one end of a veth
    /// pair deletes both).
    pub fn delete_if_exists(self, ifname: &str) -> anyhow::Result<bool> {
        if !self.exists(ifname)? {
            return Ok(false);
        }
        exec::run(Command::new("ip").args(["link", "delete", "dev", ifname]))?;
        Ok(true)
    }

    /// Runs `ip ARGS…` in the host namespace.
    pub fn ip(self, args: &[&str]) -> anyhow::Result<String> {
        exec::run(Command::new("ip").args(args))
    }
}
