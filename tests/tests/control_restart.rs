//! Control is only the coordination plane: killing it must not touch an
//! established data-plane flow, and nodes resync once it is back.

use std::process::Stdio;
use std::time::{Duration, Instant};

use causeway_e2e::local::{Node, Site};
use causeway_e2e::{CONTROL_KEY, KillOnDrop, TestDeployment, WAIT, wait_until};

/// 2 MB at 200 KiB/s: a transfer of about ten seconds.
const FILE_LEN: usize = 2_000_000;

#[test]
fn control_restart_does_not_interrupt_an_established_flow() {
    let t = TestDeployment::deploy();
    let body: Vec<u8> = (0..FILE_LEN).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(t.dep().paths().www().join("big.bin"), &body).expect("writing big.bin");
    let dir = tempfile::tempdir().expect("tempdir");
    let download = dir.path().join("big.bin");

    // Pace the VPC host's uplink to 200 KB/s with a token bucket: curl's own
    // --limit-rate does not hold on a fast path, and the transfer must span
    // the whole control restart.
    let pace = t
        .command_in(Site::Vpc, "sh")
        .args([
            "-c",
            "for i in /sys/class/net/*; do n=${i##*/}; [ \"$n\" = lo ] && continue; \
             tc qdisc add dev \"$n\" root tbf rate 1600kbit burst 32kbit latency 2s || exit 1; done",
        ])
        .output()
        .expect("running tc in the VPC namespace");
    assert!(
        pace.status.success(),
        "tc tbf in the VPC namespace failed: {}",
        String::from_utf8_lossy(&pace.stderr)
    );

    let mut cmd = t.command_in(Site::Cli, "curl");
    cmd.args(["-fsS", "--limit-rate", "200k", "--max-time", "60", "-o"])
        .arg(&download)
        .args(["-w", "%{size_download}", "http://198.19.1.10/big.bin"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut curl = KillOnDrop(cmd.spawn().expect("curl starts"));
    std::thread::sleep(Duration::from_secs(2));
    let partial = std::fs::metadata(&download).map_or(0, |m| m.len());
    assert!(partial > 0, "nothing arrived in the first 2 s");

    let control = t.kill_process(CONTROL_KEY);
    wait_until(
        Duration::from_secs(10),
        "the client to notice control is gone",
        || {
            let s = t.status(Node::Client)?;
            anyhow::ensure!(s["control_connected"] == false, "{s}");
            Ok(())
        },
    );
    assert!(
        curl.is_running(),
        "the transfer ended before control came back; it must span the restart"
    );

    let restarted = t.respawn_control();
    assert_ne!(restarted.pid, control.pid);
    for node in [Node::Client, Node::Router] {
        wait_until(
            Duration::from_secs(10),
            &format!("the {} to resync", node.as_str()),
            || {
                let s = t.status(node)?;
                anyhow::ensure!(
                    s["control_connected"] == true && s["state"] == "running",
                    "{s}"
                );
                Ok(())
            },
        );
    }
    let resynced = started.elapsed();
    assert!(
        curl.is_running(),
        "the transfer must still be running after the resync"
    );

    let out = curl.wait_output(WAIT, "the transfer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the transfer failed ({}): {stderr}",
        out.status
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), FILE_LEN.to_string());
    let got = std::fs::read(&download).expect("reading the download");
    assert_eq!(got.len(), FILE_LEN);
    assert!(
        got == body,
        "the downloaded bytes differ from the file served"
    );
    eprintln!(
        "resynced after {:.1} s; transfer took {:.1} s across the control restart",
        resynced.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    t.finish();
}
