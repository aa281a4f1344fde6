//! IP forwarding sysctls, which a subnet router needs to pass traffic
//! between the tailnet interface and the LAN.

use std::path::Path;

const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Turns on IPv4 and/or IPv6 forwarding; a `false` leaves that family's setting untouched.
///
/// Writing `1` to `conf/all/forwarding` also makes the kernel ignore router
/// advertisements on every interface (unless `accept_ra` is 2), as for any
/// IPv6 router.
pub fn enable_forwarding(ipv4: bool, ipv6: bool) -> std::io::Result<()> {
    if ipv4 {
        write_sysctl(Path::new(IPV4_FORWARD))?;
    }
    if ipv6 {
        write_sysctl(Path::new(IPV6_FORWARD))?;
    }
    Ok(())
}

fn write_sysctl(path: &Path) -> std::io::Result<()> {
    std::fs::write(path, b"1\n").map_err(|e| {
        std::io::Error::new(e.kind(), format!("writing 1 to {}: {e}", path.display()))
    })?;
    tracing::debug!(sysctl = %path.display(), "enabled forwarding");
    Ok(())
}
