//! `appliance record`'s options, and how a session is named and chosen
//! when it runs as OpenSSH's `ForceCommand`.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use causeway_recording::SessionInfo;
use causeway_recording::producer::{client_from_ssh, connection_id_from_ssh};
use clap::Args;

use super::{ProducerConfig, RecorderUrl};

/// Record a command's terminal session to a recorder (for sshd's `ForceCommand`).
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// The recorder, `http://HOST[:PORT]` (cleartext HTTP/2, port 80 by
    /// default). Repeat it (or separate with commas) for recorders to try in order.
    #[arg(
        long = "recorder",
        env = "CAUSEWAY_RECORDER_URL",
        value_name = "URL",
        required = true,
        value_delimiter = ','
    )]
    pub recorders: Vec<RecorderUrl>,
    /// Refuse the session when no recorder answers, and end it when acks stop.
    #[arg(long, env = "CAUSEWAY_RECORD_ENFORCE")]
    pub enforce: bool,
    /// How long sent bytes may wait for the recorder's ack (Tailscale SSH: 30 s).
    #[arg(long, env = "CAUSEWAY_RECORD_ACK_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub ack_timeout_ms: u64,
    /// How long connecting to the recorder and each of its answers may take.
    #[arg(long, env = "CAUSEWAY_RECORD_CONNECT_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,
    /// The ID the recorder files sessions under [default: this host's name].
    #[arg(long, env = "CAUSEWAY_RECORD_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// The connection's ID [default: from SSH_CONNECTION, else local-PID].
    #[arg(long, env = "CAUSEWAY_RECORD_CONNECTION_ID", value_name = "ID")]
    pub connection_id: Option<String>,
    /// The command to run. Without one: the SSH session's command
    /// (SSH_ORIGINAL_COMMAND) through the user's shell, or a login shell.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// What the producer reads from its environment, as sshd sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshEnvironment {
    /// `USER`, else `LOGNAME`.
    pub user: Option<String>,
    /// `SSH_CONNECTION`: client address and port, server address and port.
    pub ssh_connection: Option<String>,
    /// `SSH_ORIGINAL_COMMAND`: what the client asked to run.
    pub original_command: Option<String>,
    /// `SHELL`: the user's login shell.
    pub shell: Option<OsString>,
    /// `TERM`.
    pub term: Option<String>,
}

impl SshEnvironment {
    /// Reads this process's environment.
    pub fn from_process() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Self {
            user: var("USER").or_else(|| var("LOGNAME")),
            ssh_connection: var("SSH_CONNECTION"),
            original_command: var("SSH_ORIGINAL_COMMAND"),
            shell: std::env::var_os("SHELL").filter(|s| !s.is_empty()),
            term: var("TERM"),
        }
    }
}

/// Facts about this host and process the defaults come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// This host's name.
    pub hostname: String,
    /// This process's ID.
    pub pid: u32,
    /// This process's user ID, named when no user name is known.
    pub uid: u32,
}

impl HostFacts {
    /// Reads this host and process.
    pub fn current() -> Self {
        Self {
            hostname: rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned(),
            pid: std::process::id(),
            uid: rustix::process::getuid().as_raw(),
        }
    }
}

impl RecordArgs {
    /// The producer's configuration from these options, sshd's environment
    /// and this host's facts.
    pub fn resolve(
        &self,
        env: &SshEnvironment,
        host: &HostFacts,
    ) -> anyhow::Result<ProducerConfig> {
        let node_id = match &self.node_id {
            Some(id) if id.trim().is_empty() => {
                anyhow::bail!("--node-id is empty, expected the ID to file sessions under")
            }
            Some(id) => id.clone(),
            None if host.hostname.is_empty() => {
                anyhow::bail!(
                    "this host has no name; set --node-id to the ID to file sessions under"
                )
            }
            None => host.hostname.clone(),
        };
        let connection_id = match &self.connection_id {
            Some(id) if id.trim().is_empty() => {
                anyhow::bail!("--connection-id is empty, expected an ID for this connection")
            }
            Some(id) => id.clone(),
            None => env
                .ssh_connection
                .as_deref()
                .and_then(connection_id_from_ssh)
                .unwrap_or_else(|| format!("local-{}", host.pid)),
        };
        let user = env.user.clone().unwrap_or_else(|| host.uid.to_string());
        let shell = env
            .shell
            .clone()
            .unwrap_or_else(|| OsString::from("/bin/sh"));
        let (program, args, argv0, command) =
            match (self.command.split_first(), &env.original_command) {
                (Some((program, args)), _) => (
                    program.clone(),
                    args.to_vec(),
                    None,
                    self.command
                        .iter()
                        .map(|a| a.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                (None, Some(original)) => (
                    shell,
                    vec![OsString::from("-c"), OsString::from(original)],
                    None,
                    original.clone(),
                ),
                (None, None) => {
                    // A login shell is one whose argv[0] starts with '-' (what sshd does).
                    let name = Path::new(&shell)
                        .file_name()
                        .map_or_else(|| OsString::from("sh"), ToOwned::to_owned);
                    let mut argv0 = OsString::from("-");
                    argv0.push(name);
                    (shell, Vec::new(), Some(argv0), String::new())
                }
            };
        Ok(ProducerConfig {
            recorders: self.recorders.clone(),
            enforce: self.enforce,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            session: SessionInfo {
                src_node: env
                    .ssh_connection
                    .as_deref()
                    .and_then(client_from_ssh)
                    .unwrap_or_else(|| host.hostname.clone()),
                src_node_id: node_id,
                ssh_user: user.clone(),
                local_user: user,
                connection_id,
                command,
                term: env.term.clone(),
            },
            program,
            args,
            argv0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        record: RecordArgs,
    }

    fn args(argv: &[&str]) -> RecordArgs {
        Cli::try_parse_from(std::iter::once("record").chain(argv.iter().copied()))
            .expect("valid arguments")
            .record
    }

    fn host() -> HostFacts {
        HostFacts {
            hostname: "web1".to_owned(),
            pid: 77,
            uid: 1000,
        }
    }

    fn sshd_env() -> SshEnvironment {
        SshEnvironment {
            user: Some("alice".to_owned()),
            ssh_connection: Some("198.19.0.2 40000 198.19.0.1 22".to_owned()),
            original_command: None,
            shell: Some(OsString::from("/bin/bash")),
            term: Some("xterm".to_owned()),
        }
    }

    #[test]
    fn under_sshd_without_a_command_runs_a_login_shell() {
        let config = args(&["--recorder", "http://100.64.0.9"])
            .resolve(&sshd_env(), &host())
            .expect("resolves");
        assert_eq!(config.program, "/bin/bash");
        assert!(config.args.is_empty());
        assert_eq!(config.argv0.as_deref(), Some("-bash".as_ref()));
        let s = config.session;
        assert_eq!(s.command, "");
        assert_eq!(s.src_node_id, "web1");
        assert_eq!(s.src_node, "198.19.0.2");
        assert_eq!(s.connection_id, "198.19.0.2-40000-198.19.0.1-22");
        assert_eq!(
            (s.ssh_user.as_str(), s.local_user.as_str()),
            ("alice", "alice")
        );
        assert_eq!(s.term.as_deref(), Some("xterm"));
        assert_eq!(config.ack_timeout, Duration::from_secs(30));
        assert!(!config.enforce);
        assert_eq!(config.recorders.len(), 1);
    }

    #[test]
    fn under_sshd_runs_the_clients_command_through_the_shell() {
        let env = SshEnvironment {
            original_command: Some("echo hi; uname".to_owned()),
            ..sshd_env()
        };
        let config = args(&["--recorder", "http://r", "--enforce", "--node-id", "n9"])
            .resolve(&env, &host())
            .expect("resolves");
        assert_eq!(config.program, "/bin/bash");
        assert_eq!(
            config.args,
            [OsString::from("-c"), OsString::from("echo hi; uname")]
        );
        assert_eq!(config.argv0, None);
        assert_eq!(config.session.command, "echo hi; uname");
        assert_eq!(config.session.src_node_id, "n9");
        assert!(config.enforce);
    }

    #[test]
    fn an_explicit_command_wins() {
        let env = SshEnvironment {
            original_command: Some("ignored".to_owned()),
            ..SshEnvironment::default()
        };
        let config = args(&[
            "--recorder",
            "http://r",
            "--ack-timeout-ms",
            "500",
            "--",
            "printf",
            "%s",
            "a b",
        ])
        .resolve(&env, &host())
        .expect("resolves");
        assert_eq!(config.program, "printf");
        assert_eq!(config.args, [OsString::from("%s"), OsString::from("a b")]);
        assert_eq!(config.session.command, "printf %s a b");
        assert_eq!(config.session.connection_id, "local-77");
        assert_eq!(config.session.ssh_user, "1000");
        assert_eq!(config.session.src_node, "web1");
        assert_eq!(config.ack_timeout, Duration::from_millis(500));
    }

    #[test]
    fn several_recorders_are_tried_in_order() {
        let config = args(&[
            "--recorder",
            "http://a,http://b:81",
            "--recorder",
            "http://c",
        ])
        .resolve(&sshd_env(), &host())
        .expect("resolves");
        let urls: Vec<String> = config.recorders.iter().map(ToString::to_string).collect();
        assert_eq!(urls, ["http://a:80", "http://b:81", "http://c:80"]);
        let err = Cli::try_parse_from(["record", "--", "true"])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("--recorder <URL>"), "{err}");
    }

    #[test]
    fn bad_options_are_named() {
        let err = Cli::try_parse_from(["record", "--recorder", "ftp://r"])
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("--recorder") && err.contains("`ftp://r` is not a recorder URL"),
            "{err}"
        );
        let err =
            Cli::try_parse_from(["record", "--recorder", "http://r", "--ack-timeout-ms", "0"])
                .err()
                .expect("refused")
                .to_string();
        assert!(err.contains("--ack-timeout-ms"), "{err}");
        let err = args(&["--recorder", "http://r", "--node-id", " "])
            .resolve(&sshd_env(), &host())
            .expect_err("refused")
            .to_string();
        assert!(err.contains("--node-id is empty"), "{err}");
    }
}
