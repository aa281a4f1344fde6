//! systemd-resolved pointed at the node resolver, per link: the TUN device
//! gets the resolver as its DNS server and the tailnet's domain and the
//! split-DNS domains as routing-only domains (`~domain`), and is never the
//! default route for DNS, so resolved sends those names to the node
//! resolver and everything else where it did before. Done with
//! `resolvectl`; `resolvectl revert` undoes it on stop, and a crash needs
//! no clean-up: resolved forgets a link's settings when the link goes,
//! and the TUN device goes with the process.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// The link's DNS, set through `resolvectl`.
pub struct ResolvedLink {
    resolvectl: PathBuf,
    link: String,
    domains: Vec<String>,
}

impl ResolvedLink {
    /// Points `link`'s DNS at `resolver`, for `domains` only.
    pub fn take_over(
        resolvectl: &Path,
        link: &str,
        resolver: IpAddr,
        domains: &[String],
    ) -> anyhow::Result<Self> {
        let mut taken = Self {
            resolvectl: resolvectl.to_owned(),
            link: link.to_owned(),
            domains: Vec::new(),
        };
        let result = taken
            .run(&["dns", link, &resolver.to_string()])
            .and_then(|()| taken.run(&["default-route", link, "false"]))
            .and_then(|()| taken.set_domains(domains));
        if let Err(e) = result {
            let _ = taken.run(&["revert", link]);
            return Err(e);
        }
        tracing::info!(%link, %resolver, ?domains, "systemd-resolved sends these domains to the node resolver");
        Ok(taken)
    }

    /// What the status shows.
    pub fn describe(&self) -> String {
        let routed: Vec<String> = self.domains.iter().map(|d| format!("~{d}")).collect();
        format!(
            "systemd-resolved: link {} for {}",
            self.link,
            if routed.is_empty() {
                "no domain yet".to_owned()
            } else {
                routed.join(" ")
            }
        )
    }

    /// Routes exactly `domains` to the node resolver.
    pub fn set_domains(&mut self, domains: &[String]) -> anyhow::Result<()> {
        let domains: Vec<String> = domains
            .iter()
            .map(|d| d.trim_end_matches('.').to_owned())
            .collect();
        if domains == self.domains && !domains.is_empty() {
            return Ok(());
        }
        let args = domain_args(&self.link, &domains);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&args)?;
        self.domains = domains;
        Ok(())
    }

    /// Drops every setting made on the link.
    pub fn restore(self) -> anyhow::Result<()> {
        self.run(&["revert", &self.link])
    }

    fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let shown = format!("{} {}", self.resolvectl.display(), args.join(" "));
        let out = Command::new(&self.resolvectl)
            .args(args)
            .output()
            .with_context(|| format!("running {shown}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{shown}: {} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        );
        Ok(())
    }
}

/// `resolvectl domain LINK ~d1 ~d2 …`; with no domain, one empty argument
/// (which clears the list).
fn domain_args(link: &str, domains: &[String]) -> Vec<String> {
    let mut args = vec!["domain".to_owned(), link.to_owned()];
    if domains.is_empty() {
        args.push(String::new());
    }
    args.extend(domains.iter().map(|d| format!("~{d}")));
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in `resolvectl` that appends its arguments to a log, one
    /// call per line, and fails when asked to `fail`.
    fn fake_resolvectl(dir: &Path) -> (PathBuf, PathBuf) {
        let log = dir.join("calls.log");
        let program = dir.join("resolvectl");
        std::fs::write(
            &program,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\n[ \"$1\" = dns ] && [ \"$3\" = 192.0.2.1 ] && {{ echo 'Failed to set DNS' >&2; exit 1; }}\nexit 0\n",
                log.display()
            ),
        )
        .expect("script");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (program, log)
    }

    #[test]
    fn the_link_gets_the_resolver_and_routing_domains_and_is_reverted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (program, log) = fake_resolvectl(dir.path());
        let resolver = IpAddr::from([100, 100, 100, 100]);

        let mut link = ResolvedLink::take_over(&program, "cw0", resolver, &[]).expect("takeover");
        assert_eq!(
            link.describe(),
            "systemd-resolved: link cw0 for no domain yet"
        );
        link.set_domains(&["tailnet.example.".into(), "corp.internal".into()])
            .expect("domains");
        link.set_domains(&["tailnet.example.".into(), "corp.internal".into()])
            .expect("unchanged");
        assert_eq!(
            link.describe(),
            "systemd-resolved: link cw0 for ~tailnet.example ~corp.internal"
        );
        link.restore().expect("revert");

        let calls = std::fs::read_to_string(&log).expect("log");
        assert_eq!(
            calls,
            "dns cw0 100.100.100.100\ndefault-route cw0 false\ndomain cw0 \ndomain cw0 ~tailnet.example ~corp.internal\nrevert cw0\n"
        );
    }

    #[test]
    fn a_refusal_is_reported_with_resolvectl_s_words_and_undone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (program, log) = fake_resolvectl(dir.path());

        let err = ResolvedLink::take_over(&program, "cw0", IpAddr::from([192, 0, 2, 1]), &[])
            .err()
            .expect("refused");

        let text = format!("{err:#}");
        assert!(
            text.contains("dns cw0 192.0.2.1: Failed to set DNS"),
            "{text}"
        );
        let calls = std::fs::read_to_string(&log).expect("log");
        assert!(calls.ends_with("revert cw0\n"), "{calls}");
    }
}
