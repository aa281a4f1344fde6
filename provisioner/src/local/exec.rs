//! Running external programs (`ip`, `pg_ctl`, `psql`, `appliance`, …) and
//! turning their failures into errors that say what was run and why it failed.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

/// Environment variables the provisioner reads (`CAUSEWAY_*`) would also be
/// read by the appliance, with a different meaning (`CAUSEWAY_STATE_DIR`), so
/// children get a copy of the environment without them. `CAUSEWAY_LOG` is
/// kept: it means the same thing for both.
pub fn scrub_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CAUSEWAY_") && key != "CAUSEWAY_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Runs `cmd` to completion; fails unless it exits 0. Returns stdout.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = output(cmd, None)?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`run`], feeding `stdin` to the program. Used for SQL that carries
/// a password, which must not appear on a command line.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> anyhow::Result<String> {
    let out = output(cmd, Some(stdin))?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` to completion and returns its output whatever the exit status.
pub fn output(cmd: &mut Command, stdin: Option<&str>) -> anyhow::Result<Output> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", describe(cmd)))?;
    if let Some(text) = stdin
        && let Some(mut pipe) = child.stdin.take()
    {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("writing to `{}`", describe(cmd)))?;
    }
    child
        .wait_with_output()
        .with_context(|| format!("waiting for `{}`", describe(cmd)))
}

/// Fails with the command line, exit status and stderr unless `out` is a success.
pub fn check(cmd: &Command, out: &Output) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    bail!(
        "`{}` failed ({}): {}",
        describe(cmd),
        out.status,
        stderr.trim()
    )
}

/// The command line, for messages. Never used for commands with secrets in
/// their arguments: secrets travel in files, stdin or the environment.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}
