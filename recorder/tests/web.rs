//! The web UI over HTTP, in process: the list with and without filters, the
//! allow-list, the download byte for byte, a live session followed as it is
//! recorded, unknown sessions and malformed filters, the bundled assets.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::web::{get, get_streaming, get_text, header_for, start_with_web};
use common::{H2, event, send_v2, wait_key, wait_stored};
use http_body_util::BodyExt;
use hyper::StatusCode;

const T0: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

fn row(id: &str) -> String {
    format!("data-id=\"{id}\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_sessions_and_filters_by_node_user_and_time() {
    let (rec, web) = start_with_web("127.0.0.0/8").await;
    let alice = format!(
        "{}{}",
        header_for("nALPHA", "a1", "alice@example.com", T0),
        event(0.1, "hi\r\n")
    );
    let bob = format!(
        "{}{}",
        header_for("nBRAVO", "b1", "bob@example.com", T0 + 3_600),
        event(0.1, "yo\r\n")
    );
    assert_eq!(send_v2(rec.addr, alice.as_bytes(), 4096).await.1, None);
    assert_eq!(send_v2(rec.addr, bob.as_bytes(), 4096).await.1, None);
    wait_stored(&rec.store(), 2, 10).await;
    let (a, b) = (
        row(&common::web::stored_id(
            &rec.store(),
            "nALPHA/20231114T221320Z-a1",
        )),
        row(&common::web::stored_id(
            &rec.store(),
            "nBRAVO/20231114T231320Z-b1",
        )),
    );

    let shown = |page: &str| (page.contains(&a), page.contains(&b));
    let all = get_text(web, "/").await;
    assert_eq!(shown(&all), (true, true), "{all}");
    assert!(all.contains("2 sessions"), "{all}");
    assert!(
        all.find(&b) < all.find(&a),
        "newest first: bravo started an hour after alpha"
    );
    assert!(all.contains("alice@example.com") && all.contains("nBRAVO.tail-scale.ts.net"));

    let cases = [
        ("/?node=nalpha", (true, false)),
        ("/?node=bravo.tail", (false, true)),
        ("/?user=BOB", (false, true)),
        ("/?user=alice&node=", (true, false)),
        ("/?from=2023-11-14T22%3A30", (false, true)),
        ("/?to=2023-11-14T22%3A30", (true, false)),
        ("/?from=2023-11-14&to=2023-11-14", (true, true)),
        ("/?from=2023-11-15", (false, false)),
        ("/?node=nALPHA&user=bob", (false, false)),
    ];
    for (path, expected) in cases {
        let page = get_text(web, path).await;
        assert_eq!(shown(&page), expected, "GET {path}");
    }
    let filtered = get_text(web, "/?user=bob&last=100000d").await;
    assert!(
        filtered.contains("value=\"bob\"") && filtered.contains("value=\"100000d\""),
        "the form keeps the filter: {filtered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_filters_get_400_naming_the_parameter() {
    let (_rec, web) = start_with_web("127.0.0.0/8").await;
    for (path, param) in [
        ("/?from=yesterday", "`from`"),
        ("/?to=2023-02-30", "`to`"),
        ("/?last=forever", "`last`"),
        ("/?page=0", "`page`"),
        ("/?host=x", "`host`"),
    ] {
        let (status, _, body) = get(web, path).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {path}: {text}");
        assert!(text.contains(param), "GET {path}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_outside_the_allow_list_get_403_for_everything() {
    let (rec, web) = start_with_web("10.0.0.0/8").await;
    let body = format!(
        "{}{}",
        header_for("nX", "c", "alice@example.com", T0),
        event(0.1, "secret\r\n")
    );
    assert_eq!(send_v2(rec.addr, body.as_bytes(), 4096).await.1, None);
    wait_stored(&rec.store(), 1, 10).await;
    for path in [
        "/",
        "/sessions/nX/20231114T221320Z-c",
        "/sessions/nX/20231114T221320Z-c.cast",
        "/sessions/nX/20231114T221320Z-c/events",
        "/assets/asciinema-player.min.js",
    ] {
        let (status, _, body) = get(web, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "GET {path}");
        assert!(
            !String::from_utf8_lossy(&body).contains("secret"),
            "nothing leaks: {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_is_the_stored_cast_byte_for_byte() {
    let (rec, web) = start_with_web("127.0.0.0/8").await;
    let mut body = header_for("nDL", "dl", "alice@example.com", T0);
    for i in 0..200 {
        body.push_str(&event(
            f64::from(i) * 0.01,
            &format!("w\u{f6}rld {i} \u{1b}[1m\"bold\"\u{1b}[0m\r\n"),
        ));
    }
    assert_eq!(send_v2(rec.addr, body.as_bytes(), 1000).await.1, None);
    let stored = wait_key(&rec.store(), "nDL/20231114T221320Z-dl.cast", 10).await;
    assert_eq!(stored, body.as_bytes());
    let id = common::web::stored_id(&rec.store(), "nDL/20231114T221320Z-dl");

    let (status, headers, downloaded) = get(web, &format!("/sessions/{id}.cast")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(downloaded == stored, "the download is the stored file");
    assert_eq!(headers["content-type"], "application/x-asciicast");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"{}.cast\"", id.replace('/', "_"))
    );

    // The event stream of a stored session: all of it in one reset, then the end.
    let events = get_text(web, &format!("/sessions/{id}/events")).await;
    assert!(
        events.starts_with("data: {\"cols\":40,") && events.contains("\"time\":1.99"),
        "{events}"
    );
    assert!(events.ends_with("\n\nevent: done\ndata: \n\n"), "{events}");
    assert_eq!(events.matches("data: ").count(), 2, "{events}");

    let page = get_text(web, &format!("/sessions/{id}")).await;
    assert!(
        page.contains(&format!("data-src=\"/sessions/{id}.cast\"")),
        "{page}"
    );
    assert!(
        page.contains("data-live=\"false\"") && page.contains("data-cols=\"40\""),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sessions_and_paths_get_404() {
    let (_rec, web) = start_with_web("127.0.0.0/8").await;
    for path in [
        "/sessions/nNONE/20231114T221320Z-c",
        "/sessions/nNONE/20231114T221320Z-c.cast",
        "/sessions/nNONE/20231114T221320Z-c/events",
        "/sessions/..%2F..%2Fetc/passwd",
        "/sessions/n/not-a-session",
        "/sessions/",
        "/assets/nothing.js",
        "/elsewhere",
    ] {
        let (status, _, _) = get(web, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_served_with_types_and_caching() {
    let (_rec, web) = start_with_web("127.0.0.0/8").await;
    for (path, content_type, needle) in [
        (
            "/assets/asciinema-player.min.js",
            "text/javascript; charset=utf-8",
            "var AsciinemaPlayer=",
        ),
        (
            "/assets/asciinema-player.css",
            "text/css; charset=utf-8",
            ".ap-player",
        ),
        (
            "/assets/asciinema-player.LICENSE",
            "text/plain; charset=utf-8",
            "Apache License",
        ),
        (
            "/assets/session.js",
            "text/javascript; charset=utf-8",
            "AsciinemaPlayer.create",
        ),
    ] {
        let (status, headers, body) = get(web, path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
        assert_eq!(headers["content-type"], content_type, "GET {path}");
        assert_eq!(
            headers["cache-control"], "public, max-age=3600",
            "GET {path}"
        );
        assert!(
            String::from_utf8_lossy(&body).contains(needle),
            "GET {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_is_listed_live_and_its_stream_follows_new_output() {
    let (rec, web) = start_with_web("127.0.0.0/8").await;
    let name = "nLIVE/20231114T221320Z-live";
    let mut h2 = H2::connect(rec.addr).await;
    let (_, mut up) = h2.post().await;
    let before = format!(
        "{}{}",
        header_for("nLIVE", "live", "carol@example.com", T0),
        event(0.2, "before-open\r\n")
    );
    up.send(Bytes::from(before.clone())).await;
    up.ack_at_least(before.len() as u64).await;

    let list = get_text(web, "/").await;
    let id =
        common::web::listed_id(&list, name).unwrap_or_else(|| panic!("{name} not listed: {list}"));
    let id = id.as_str();
    assert!(
        list.contains(&format!("class=\"session live\" {}", row(id))),
        "listed as live: {list}"
    );
    let page = get_text(web, &format!("/sessions/{id}")).await;
    assert!(
        page.contains("data-live=\"true\"")
            && page.contains(&format!("data-events=\"/sessions/{id}/events\"")),
        "{page}"
    );
    let (status, _, so_far) = get(web, &format!("/sessions/{id}.cast")).await;
    assert_eq!(
        (status, so_far),
        (StatusCode::OK, before.clone().into_bytes()),
        "download of what was recorded so far"
    );

    let response = get_streaming(web, &format!("/sessions/{id}/events")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut stream = response.into_body();
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "before-open").await;
    assert!(
        seen.starts_with("data: {") && seen.contains("\"cols\":40"),
        "the stream starts with a reset holding the screen so far: {seen}"
    );

    let after = event(1.5, "after-open\r\n");
    up.send(Bytes::from(after.clone())).await;
    up.ack_at_least((before.len() + after.len()) as u64).await;
    read_until(
        &mut stream,
        &mut seen,
        "data: [1.5,\"o\",\"after-open\\r\\n\"]\n\n",
    )
    .await;

    up.finish();
    assert_eq!(up.drain().await.1, None);
    read_until(&mut stream, &mut seen, "event: done\n").await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.frame())
        .await
        .expect("the stream ends after done");
    assert!(end.is_none(), "nothing after done: {end:?}");

    wait_key(&rec.store(), &format!("{name}.cast"), 10).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = get_text(web, "/").await;
        if list.contains(&format!("class=\"session\" {}", row(id))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not listed as stored: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the stream into `seen` until it contains `needle` (within 10 s).
async fn read_until(stream: &mut hyper::body::Incoming, seen: &mut String, needle: &str) {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains(needle) {
            let Some(frame) = stream.frame().await else {
                return false;
            };
            if let Ok(data) = frame.expect("stream frame").into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
        true
    })
    .await;
    assert_eq!(found, Ok(true), "{needle:?} not in the live stream: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_by_fifty_and_links_keep_the_filter() {
    let (rec, web) = start_with_web("127.0.0.0/8").await;
    // Recordings already in storage (a previous run's), one a minute apart.
    for i in 0..51i64 {
        let ts = T0 + i * 60;
        let key = rec
            .store()
            .join(format!("nPAGE/{}-c{i:02}.cast", format_key_time(ts)));
        std::fs::create_dir_all(key.parent().expect("parent")).expect("mkdir");
        let body = format!(
            "{}{}",
            header_for("nPAGE", &format!("c{i:02}"), "dave@example.com", ts),
            event(0.1, "x")
        );
        std::fs::write(&key, body).expect("write");
    }
    let first = get_text(web, "/?node=npage").await;
    assert!(first.contains("51 sessions, page 1 of 2"), "{first}");
    assert_eq!(first.matches("<tr class=\"session").count(), 50);
    assert!(first.contains("c50\""), "the newest is on page 1");
    assert!(!first.contains("c00\""), "the oldest is not");
    assert!(
        first.contains("rel=\"next\" href=\"/?node=npage&#38;page=2\""),
        "{first}"
    );

    let second = get_text(web, "/?node=npage&page=2").await;
    assert_eq!(second.matches("<tr class=\"session").count(), 1);
    assert!(
        second.contains("data-id=\"nPAGE/20231114T221320Z-c00\""),
        "{second}"
    );
    assert!(
        second.contains("rel=\"prev\" href=\"/?node=npage\""),
        "{second}"
    );
}

/// `YYYYMMDDTHHMMSSZ` for a time on 2023-11-14 from 22:13:20 on.
fn format_key_time(ts: i64) -> String {
    let secs = ts - T0 + 22 * 3600 + 13 * 60 + 20;
    format!(
        "20231114T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
