//! A stored recording plays in Debian's `asciinema` (`asciinema cat`).
//! Needs `asciinema` (`apt-get install -y asciinema`) and `script` from
//! util-linux (asciinema cat insists on a terminal); fails loudly without them.

mod common;

use std::process::{Command, Stdio};

use common::{Recorder, event, header, send_v2, wait_stored};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asciinema_cat_plays_a_stored_recording() {
    let version = Command::new("asciinema").arg("--version").output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "asciinema is missing ({version:?}): this test needs it; install with `apt-get install -y asciinema`"
    );
    let rec = Recorder::start(|_| {}).await;
    let outputs = [
        "$ uname -a\r\n",
        "Linux box 6.1.0 x86_64 GNU/Linux\r\n",
        "w\u{f6}rld \u{1b}[1mbold\u{1b}[0m\r\n",
        "$ exit\r\n",
    ];
    let mut body = header("nPLAY", "play");
    for (i, text) in outputs.iter().enumerate() {
        body.push_str(&event(i as f64 * 0.25, text));
    }
    assert_eq!(send_v2(rec.addr, body.as_bytes(), 64).await.1, None);
    wait_stored(&rec.store(), 1, 10).await;
    let key = common::stored_key(&rec.store(), "nPLAY/20231114T221320Z-play.cast")
        .expect("the recording is stored");
    let path = rec.store().join(key);

    // `script` gives asciinema the terminal it opens; -e passes its exit code on.
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("asciinema cat '{}'", path.display()),
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("`script` (util-linux) runs");
    let played = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "asciinema cat failed on {}:\n{played}",
        path.display()
    );
    assert_eq!(
        played,
        outputs.concat(),
        "asciinema cat printed the recorded output"
    );
}
