//! Background processes of a deployment: start them detached with their
//! output in a log file, recognise them later by pid *and* start time (so a
//! recycled pid is never signalled), and stop them.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::exec;

/// How a recorded process is identified across provisioner runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Its pid.
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat` (clock ticks since boot) when recorded.
    pub start_time: u64,
    /// The namespace it runs in.
    pub namespace: String,
    /// Its log file, if the provisioner started it.
    pub log: Option<PathBuf>,
}

/// How a process was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stopped {
    /// It was not running (or the pid now belongs to another process).
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It had to be killed with SIGKILL.
    Killed,
}

impl ProcessRecord {
    /// Records the running process `pid`.
    pub fn of_pid(pid: i32, namespace: &str, log: Option<PathBuf>) -> anyhow::Result<Self> {
        let start_time =
            proc_start_time(pid).with_context(|| format!("reading the start time of pid {pid}"))?;
        Ok(Self {
            pid,
            start_time,
            namespace: namespace.to_owned(),
            log,
        })
    }

    /// Whether the recorded process still runs: same pid, same start time,
    /// and not yet a finished zombie (see [`running`]).
    pub fn is_alive(&self) -> bool {
        running(self.pid, self.start_time)
    }

    /// Sends SIGTERM, waits up to `grace`, then SIGKILL.
    pub fn stop(&self, grace: Duration) -> Stopped {
        if !self.is_alive() {
            return Stopped::NotRunning;
        }
        stop_pid(self.pid, grace, || self.is_alive())
    }

    /// The last `lines` lines of its log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.log
            .as_deref()
            .map(|p| log_tail(p, lines))
            .unwrap_or_default()
    }
}

/// Starts `cmd` detached from the provisioner (own process group, stdin
/// null, stdout and stderr appended to `log`) and records it.
pub fn spawn_logged(
    cmd: &mut Command,
    namespace: &str,
    log: &Path,
) -> anyhow::Result<ProcessRecord> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log file {}", log.display()))?;
    let err = file
        .try_clone()
        .with_context(|| format!("duplicating log file {}", log.display()))?;
    // Own process group: a Ctrl-C aimed at the provisioner must not take
    // the deployment's daemons down with it.
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting `{}`", exec::describe(cmd)))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    // `ip netns exec` execs the program in place, so the pid (and its start
    // time) is the daemon's own.
    ProcessRecord::of_pid(pid, namespace, Some(log.to_owned()))
}

/// Stops an unrecorded pid (a stray process found in a namespace).
pub fn stop_stray(pid: i32, grace: Duration) -> Stopped {
    let Some(start) = read_stat(pid).map(|s| s.start_time) else {
        return Stopped::NotRunning;
    };
    stop_pid(pid, grace, || running(pid, start))
}

/// Field 22 of `/proc/PID/stat`.
pub fn proc_start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_time)
}

/// The last `lines` lines of a text file, or nothing.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `probe` every 100 ms until it returns `Ok(Some(_))`, it errors, or
/// `timeout` passes (then `Ok(None)`).
pub fn poll<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe()? {
            return Ok(Some(v));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        sleep(Duration::from_millis(100));
    }
}

/// Whether `pid`, started at `start_time`, still holds anything: its files,
/// sockets and listening ports. A thread-group leader shows as a zombie as
/// soon as its own thread exits, while its other threads may still be
/// exiting with the shared file table (and so a bound port) open. Only when
/// the leader is the last task left has everything been released.
fn running(pid: i32, start_time: u64) -> bool {
    match read_stat(pid) {
        Some(stat) if stat.start_time == start_time => stat.state != 'Z' || task_count(pid) > 1,
        _ => false,
    }
}

/// How many threads `/proc/PID/task` lists (0 once the pid is gone).
fn task_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |dir| dir.count())
}

struct Stat {
    state: char,
    start_time: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/PID/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")" come field 3 (state) onwards; starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    Some(Stat { state, start_time })
}

fn stop_pid(pid: i32, grace: Duration, alive: impl Fn() -> bool) -> Stopped {
    let target = Pid::from_raw(pid);
    if kill(target, Signal::SIGTERM).is_err() {
        return Stopped::NotRunning;
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive() {
            return Stopped::Terminated;
        }
        sleep(Duration::from_millis(50));
    }
    let _ = kill(target, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive() && Instant::now() < deadline {
        sleep(Duration::from_millis(20));
    }
    Stopped::Killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_parentheses_and_spaces_in_the_name() {
        let text = "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_stat(text).expect("parses");
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.start_time, 987654);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = i32::try_from(std::process::id()).expect("pid fits i32");
        let me = ProcessRecord::of_pid(pid, "host", None).expect("own stat readable");
        assert!(me.is_alive());
        let recycled = ProcessRecord {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!recycled.is_alive());
    }

    #[test]
    fn stops_a_child_with_sigterm() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        let rec = ProcessRecord::of_pid(pid, "host", None).expect("stat readable");
        // A zombie child counts as stopped, so this returns before reaping.
        assert_eq!(rec.stop(Duration::from_secs(5)), Stopped::Terminated);
        let _ = child.wait();
        assert!(!rec.is_alive());
    }
}
