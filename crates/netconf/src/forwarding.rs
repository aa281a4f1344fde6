//! IP forwarding sysctls, which a subnet router needs to pass traffic
//! between the tailnet interface and the LAN, and [`SubnetRouter`], which
//! holds forwarding and the router's nftables table for as long as the
//! router runs and puts both back when dropped, on every exit path.

use std::path::Path;

use crate::firewall::{FirewallError, FirewallPolicy, apply_firewall, remove_firewall};

const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Turns on IPv4 and/or IPv6 forwarding; a `false` leaves that family's
/// setting untouched. The returned [`Forwarding`] writes back the previous
/// value of every setting this call changed when it is dropped.
///
/// Writing `1` to `conf/all/forwarding` also makes the kernel ignore router
/// advertisements on every interface (unless `accept_ra` is 2), as for any
/// IPv6 router; writing the previous `0` back sets every interface's
/// `forwarding` to 0.
pub fn enable_forwarding(ipv4: bool, ipv6: bool) -> std::io::Result<Forwarding> {
    let mut forwarding = Forwarding {
        changed: Vec::new(),
    };
    for (wanted, path) in [(ipv4, IPV4_FORWARD), (ipv6, IPV6_FORWARD)] {
        if !wanted {
            continue;
        }
        // On an error here, `forwarding` is dropped and undoes the first.
        let previous = read_sysctl(Path::new(path))?;
        if previous == "1" {
            continue;
        }
        write_sysctl(Path::new(path), "1")?;
        forwarding.changed.push((path, previous));
    }
    Ok(forwarding)
}

/// Whether the kernel forwards IPv4 (`ipv6 == false`) or IPv6 packets
/// now (the sysctl reads `1`).
pub fn forwarding_enabled(ipv6: bool) -> std::io::Result<bool> {
    let path = if ipv6 { IPV6_FORWARD } else { IPV4_FORWARD };
    Ok(read_sysctl(Path::new(path))? == "1")
}

/// Forwarding settings changed by [`enable_forwarding`], with their
/// previous values; dropping it writes them back.
#[derive(Debug)]
#[must_use = "dropping it turns forwarding back to its previous value at once"]
pub struct Forwarding {
    changed: Vec<(&'static str, String)>,
}

impl Forwarding {
    /// Writes the previous values back now, reporting the first failure.
    pub fn restore(mut self) -> std::io::Result<()> {
        self.restore_changed()
    }

    fn restore_changed(&mut self) -> std::io::Result<()> {
        let mut first_error = None;
        while let Some((path, previous)) = self.changed.pop() {
            if let Err(e) = write_sysctl(Path::new(path), &previous) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        if let Err(e) = self.restore_changed() {
            tracing::error!(error = %e, "turning IP forwarding back to its previous value");
        }
    }
}

/// Why a subnet router could not start; whatever it had changed is undone.
#[derive(Debug, thiserror::Error)]
pub enum SubnetRouterError {
    /// Reading or writing a forwarding sysctl failed.
    #[error("enabling IP forwarding")]
    Forwarding(#[source] std::io::Error),
    /// The nftables table could not be applied.
    #[error("applying the nftables table")]
    Firewall(#[source] FirewallError),
}

/// A running subnet router's kernel state: IP forwarding and the nftables
/// table. Dropping it removes the table, then turns forwarding back to
/// its previous values, so an early return or a panic unwinding through
/// its owner leaves the host as it was.
#[derive(Debug)]
#[must_use = "dropping it removes the firewall and turns forwarding back off at once"]
pub struct SubnetRouter {
    table: String,
    forwarding: Option<Forwarding>,
}

impl SubnetRouter {
    /// Turns on forwarding (IPv6 too if `ipv6`) and applies `policy`. If
    /// the table cannot be applied, forwarding is turned back at once.
    pub fn start(policy: &FirewallPolicy, ipv6: bool) -> Result<Self, SubnetRouterError> {
        let forwarding = enable_forwarding(true, ipv6).map_err(SubnetRouterError::Forwarding)?;
        apply_firewall(policy).map_err(SubnetRouterError::Firewall)?;
        Ok(Self {
            table: policy.table.clone(),
            forwarding: Some(forwarding),
        })
    }
}

impl Drop for SubnetRouter {
    fn drop(&mut self) {
        if let Err(e) = remove_firewall(&self.table) {
            tracing::error!(error = %e, table = %self.table, "removing the nftables table");
        }
        drop(self.forwarding.take());
    }
}

fn read_sysctl(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))
}

fn write_sysctl(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{value}\n")).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("writing {value} to {}: {e}", path.display()),
        )
    })?;
    tracing::debug!(sysctl = %path.display(), value, "set forwarding");
    Ok(())
}
