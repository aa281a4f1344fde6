//! The session page really plays a recording: headless Chromium (Debian's
//! `chromium`, installed by `.ci/install-deps`) screenshots the page of a
//! recording that paints a block in a colour nothing else on the page uses,
//! and the test finds that colour in the PNG; the page of a recording
//! without it is the control. The page's HTML holds no recording data, so
//! the colour can only come from asciinema-player fetching the `.cast` and
//! rendering it: if the player's JS or the `.cast` were not served, the
//! block would be missing. A second test does the same for a session in
//! progress, whose page follows the spool over Server-Sent Events. Chromium
//! may reach loopback only.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::web::{header_for, listed_id, start_with_web, stored_id};
use common::{event, send_v2, wait_stored};

/// A stored recording: let the page run 5 s of virtual time (it plays in 0.2 s).
const STORED_WAIT: &str = "--virtual-time-budget=5000";
/// A live page never goes idle (its event stream stays open), so virtual
/// time would not advance: stop loading after at most 4 s of real time.
const LIVE_WAIT: &str = "--timeout=4000";

/// The block's colour, as a 24-bit SGR background.
const BLOCK: [u8; 3] = [18, 200, 77];
/// A second colour, for what a live session showed before the page opened.
const EARLY: [u8; 3] = [200, 40, 160];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_recorded_block_in_the_player() {
    require_chromium();
    let (rec, web) = start_with_web("127.0.0.0/8").await;
    let mut painted = header_for("nPAINT", "paint", "alice@example.com", 1_700_000_000);
    painted.push_str(&event(0.1, "$ paint\r\n"));
    painted.push_str(&event(0.2, &painted_rows(BLOCK)));
    let mut plain = header_for("nPLAIN", "plain", "alice@example.com", 1_700_000_000);
    plain.push_str(&event(0.1, "$ echo plain\r\nplain\r\n"));
    assert_eq!(send_v2(rec.addr, painted.as_bytes(), 4096).await.1, None);
    assert_eq!(send_v2(rec.addr, plain.as_bytes(), 4096).await.1, None);
    wait_stored(&rec.store(), 2, 10).await;

    let shots = tempfile::tempdir().expect("tempdir");
    let with = shots.path().join("painted.png");
    let without = shots.path().join("plain.png");
    screenshot(
        &format!(
            "http://{web}/sessions/{}",
            stored_id(&rec.store(), "nPAINT/20231114T221320Z-paint")
        ),
        &with,
        shots.path(),
        STORED_WAIT,
    )
    .await;
    screenshot(
        &format!(
            "http://{web}/sessions/{}",
            stored_id(&rec.store(), "nPLAIN/20231114T221320Z-plain")
        ),
        &without,
        shots.path(),
        STORED_WAIT,
    )
    .await;

    let block = count_colour(&with, BLOCK);
    // 4 rows of 30 cells at the default font size: thousands of pixels.
    assert!(
        block > 2_000,
        "the recorded block is not on the screenshot ({block} pixels of {BLOCK:?}); kept at {}",
        keep(&with)
    );
    assert_eq!(
        count_colour(&without, BLOCK),
        0,
        "the control page shows the block colour; kept at {}",
        keep(&without)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_follows_a_live_session_in_the_player() {
    require_chromium();
    let (rec, web) = start_with_web("127.0.0.0/8").await;
    let mut h2 = common::H2::connect(rec.addr).await;
    let (_, mut up) = h2.post().await;
    let head = header_for("nLIVE", "live", "alice@example.com", 1_700_000_000);
    let early = event(0.1, &painted_rows(EARLY));
    up.send(head.clone() + &early).await;
    up.ack_at_least((head.len() + early.len()) as u64).await;
    let list = common::web::get_text(web, "/").await;
    let id = listed_id(&list, "nLIVE/20231114T221320Z-live").expect("the live session is listed");
    let page = format!("http://{web}/sessions/{id}");
    let shots = tempfile::tempdir().expect("tempdir");

    let before = shots.path().join("live-before.png");
    let (early_px, block_px) =
        live_screenshot(&page, &before, shots.path(), |early, _| early > 2_000).await;
    assert!(
        early_px > 2_000 && block_px == 0,
        "before: expected the early block ({early_px} pixels) and not the later one ({block_px}); kept at {}",
        keep(&before)
    );

    let block = event(0.5, &painted_rows(BLOCK));
    up.send(block.clone()).await;
    up.ack_at_least((head.len() + early.len() + block.len()) as u64)
        .await;
    let after = shots.path().join("live-after.png");
    let (early_px, block_px) = live_screenshot(&page, &after, shots.path(), |early, block| {
        early > 2_000 && block > 2_000
    })
    .await;
    assert!(
        early_px > 2_000 && block_px > 2_000,
        "after: expected both blocks ({early_px} and {block_px} pixels); kept at {}",
        keep(&after)
    );
    up.finish();
    assert_eq!(up.drain().await.1, None);
}

/// Screenshots a live page until `done(early, block)` holds for the pixel
/// counts of the two colours, at most 5 times; returns the last counts.
/// Chromium shoots once the page has loaded, and the player's event stream
/// may deliver a moment later on a busy machine: a retry, not a longer sleep.
async fn live_screenshot(
    url: &str,
    out: &Path,
    scratch: &Path,
    done: impl Fn(usize, usize) -> bool,
) -> (usize, usize) {
    let mut counts = (0, 0);
    for _ in 0..5 {
        screenshot(url, out, scratch, LIVE_WAIT).await;
        counts = (count_colour(out, EARLY), count_colour(out, BLOCK));
        if done(counts.0, counts.1) {
            break;
        }
    }
    counts
}

/// Fails (never skips) when Chromium is missing.
fn require_chromium() {
    let version = std::process::Command::new("chromium")
        .arg("--version")
        .output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "chromium is missing ({version:?}): this test needs Debian's `chromium`; run .ci/install-deps"
    );
}

/// Four rows of 30 cells with background `rgb`.
fn painted_rows([r, g, b]: [u8; 3]) -> String {
    format!("\u{1b}[48;2;{r};{g};{b}m{}\u{1b}[0m\r\n", " ".repeat(30)).repeat(4)
}

/// Runs headless Chromium on `url`, writing a PNG to `out`. Every host name
/// but loopback fails to resolve and every non-loopback request goes to a
/// closed proxy, so nothing leaves the machine.
async fn screenshot(url: &str, out: &Path, scratch: &Path, wait: &str) {
    let profile = tempfile::tempdir_in(scratch).expect("profile dir");
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--proxy-server=127.0.0.1:9",
            "--window-size=1000,700",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(wait)
        .arg(format!("--screenshot={}", out.display()))
        .arg(url)
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let done = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium runs");
    assert!(
        done.status.success() && out.exists(),
        "chromium failed on {url}: {}\n{}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
}

/// Pixels of exactly `rgb` in the PNG at `path`.
fn count_colour(path: &Path, rgb: [u8; 3]) -> usize {
    let file = std::fs::File::open(path).expect("screenshot exists");
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("fits in memory")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(
        channels >= 3,
        "an RGB screenshot, got {:?}",
        info.color_type
    );
    buf[..info.buffer_size()]
        .chunks_exact(channels)
        .filter(|px| px[..3] == rgb)
        .count()
}

/// Copies a screenshot somewhere that outlives the test, for a failure message.
fn keep(path: &Path) -> String {
    let name = path
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let kept = std::env::temp_dir().join(format!("causeway-web-{name}"));
    let _ = std::fs::copy(path, &kept);
    kept.display().to_string()
}
