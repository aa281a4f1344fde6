//! `appliance run` with only a `[recorder]` section: the role listens where
//! configured, stores an HTTP/1.1 `POST /record` upload in local storage
//! byte for byte, refuses bad config before it binds anything, and stops
//! cleanly on SIGTERM. Loopback only; the protocol's details are tested in
//! `recorder/tests`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use causeway_test_support::free_port;

const HEADER: &str = "{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1700000000,\"srcNode\":\"web1.tailnet\",\"srcNodeID\":\"n1\",\"sshUser\":\"alice\",\"localUser\":\"alice\",\"connectionID\":\"c1\"}\n";

/// The appliance, killed on drop if a test fails before stopping it.
struct Appliance(Child);

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(dir: &Path, port: u16, extra: &str) -> std::path::PathBuf {
    let path = dir.join("appliance.toml");
    let text = format!(
        "state_dir = \"{state}\"\n\n[recorder]\nlisten = \"127.0.0.1:{port}\"\nallow = [\"127.0.0.0/8\"]\nspool_dir = \"{spool}\"\n{extra}\n[recorder.storage]\nkind = \"local\"\ndir = \"{store}\"\n",
        state = dir.join("state").display(),
        spool = dir.join("spool").display(),
        store = dir.join("store").display(),
    );
    std::fs::write(&path, text).expect("writing the config");
    path
}

fn stored_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn recorder_role_stores_an_upload_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, "");
    let child = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("appliance starts");
    let mut appliance = Appliance(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "recorder not listening on {port}: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };

    let body = format!("{HEADER}[0.5,\"o\",\"hello\\r\\n\"]\n[1.0,\"o\",\"bye\\r\\n\"]\n");
    let request = format!(
        "POST /record HTTP/1.1\r\nHost: recorder\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes())
        .expect("sending the recording");
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .expect("reading the answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let store = dir.path().join("store");
    let deadline = Instant::now() + Duration::from_secs(20);
    let file = loop {
        if let Some(f) = stored_files(&store)
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "cast"))
        {
            break f;
        }
        assert!(
            Instant::now() < deadline,
            "nothing stored under {}",
            store.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let bytes = std::fs::read(&file).expect("reading the stored recording");
    assert_eq!(String::from_utf8_lossy(&bytes), body);
    assert!(file.starts_with(store.join("n1")), "{}", file.display());

    let pid = i32::try_from(appliance.0.id()).expect("a pid fits in i32");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM delivered");
    let status = appliance.0.wait().expect("appliance exits");
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
}

#[test]
fn bad_recorder_config_is_refused_before_listening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), port, "ack_interval_ms = 45000");
    let out = Command::new(env!("CARGO_BIN_EXE_appliance"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("appliance runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ack_interval_ms is 45000")
            && stderr.contains(&config.display().to_string()),
        "the error names the file and the key: {stderr}"
    );
    assert!(!dir.path().join("spool").exists(), "nothing was created");
}
