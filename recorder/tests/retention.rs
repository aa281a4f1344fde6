//! Retention of the local backend as `serve` runs it: at start, recordings
//! older than `retention_days` are deleted and younger ones kept.

mod common;

use std::time::{Duration, SystemTime};

use causeway_recorder::StorageConfig;
use common::{Recorder, stored};

fn write_aged(path: &std::path::Path, days: u64) {
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(path, b"{}\n").expect("write");
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(SystemTime::now() - Duration::from_secs(days * 86_400))
        .expect("set mtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_local_recordings_are_deleted_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    write_aged(&store.join("nOLD/20200101T000000Z-old.cast"), 31);
    write_aged(&store.join("nNEW/20200101T000000Z-new.cast"), 29);
    write_aged(&store.join("nOLD/notes.txt"), 400);

    let rec = Recorder::start_in(dir, |c| {
        if let StorageConfig::Local { retention_days, .. } = &mut c.storage {
            *retention_days = Some(30);
        }
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let files = stored(&rec.store());
        if !files.contains_key("nOLD/20200101T000000Z-old.cast") {
            let mut keys: Vec<&str> = files.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(
                keys,
                ["nNEW/20200101T000000Z-new.cast", "nOLD/notes.txt"],
                "only the old recording goes"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 31-day-old recording was not deleted within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
