//! What the recorder's web UI parses from a request: the list's query
//! string and a session ID from the path. Neither may panic, and an ID that
//! parses must map to a key under the prefix and back.
#![no_main]

use causeway_recording::{SessionFilter, SessionId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = SessionFilter::from_query(text, 1_700_000_000) {
        let again = SessionFilter::from_query(&filter.query(filter.page), 1_700_000_000)
            .expect("a filter's own query parses");
        assert_eq!(again, filter);
    }
    if let Ok(id) = SessionId::parse(text) {
        let key = id.key("rec");
        assert!(key.starts_with("rec/") && key.ends_with(".cast"));
        assert_eq!(SessionId::from_key("rec", &key), Some(id));
    }
});
