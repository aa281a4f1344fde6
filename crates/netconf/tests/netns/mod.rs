//! Runs a test body in a fresh network namespace of its own.
//!
//! `unshare(CLONE_NEWNET)` moves only the calling thread, so each body runs
//! on a dedicated thread: its netlink sockets, `/proc/sys/net` writes and
//! child processes (which inherit the spawning thread's namespaces) all land
//! in the new namespace, which the kernel frees when the thread and its
//! sockets are gone, whether the test passed or panicked.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

/// Runs `body` on a new thread inside a new, empty network namespace.
///
/// Panics (fails the test) when not root: these tests must not pass by skipping.
pub fn in_fresh_netns<F>(body: F)
where
    F: FnOnce() + Send + 'static,
{
    assert!(
        nix::unistd::geteuid().is_root(),
        "causeway-netconf's integration tests need root (CAP_NET_ADMIN) to create network \
         namespaces; run them as root, e.g. `sudo -E cargo nextest run -p causeway-netconf`"
    );
    let outcome = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET) failed; are we root with CAP_SYS_ADMIN?");
        assert_isolated();
        body();
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Guards against touching the host: this thread and its children must be
/// in a namespace other than the process's original one.
fn assert_isolated() {
    let host = std::fs::read_link("/proc/self/ns/net").expect("read main thread netns");
    let ours = std::fs::read_link("/proc/thread-self/ns/net").expect("read thread netns");
    assert_ne!(host, ours, "thread is still in the host network namespace");
    let child = run("readlink", &["/proc/self/ns/net"]);
    assert_eq!(
        child.trim(),
        ours.to_string_lossy(),
        "child processes do not inherit the thread's network namespace"
    );
}

/// Runs a command (in the current thread's namespace), failing the test if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A current-thread tokio runtime, so its sockets stay in this thread's namespace.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build tokio runtime")
}

/// A named network namespace (`ip netns add`) standing in for another
/// host; deleted when dropped, so also when the test panics.
pub struct NamedNetns {
    name: String,
}

impl NamedNetns {
    /// Creates `cwnc-<pid>-<role>` (unique per test process).
    pub fn new(role: &str) -> Self {
        let name = format!("cwnc-{}-{role}", std::process::id());
        run("ip", &["netns", "add", &name]);
        Self { name }
    }

    /// The namespace's name, for `ip link set … netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace, failing the test if it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Whether a command inside the namespace exits with success.
    pub fn succeeds(&self, program: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
            .status
            .success()
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
