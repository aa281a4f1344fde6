//! Auth-key strings as nodes present them (`RegisterRequest.auth_key`):
//! `auth_keys::parse`, `validate_tag`, and `validate_auth_key` against a
//! tailnet holding one real key. Never panics; a key is only accepted if
//! it is exactly the issued one (surrounding whitespace aside).
#![no_main]

use std::sync::LazyLock;

use causeway_tailnet::addresses::ula_from_random;
use causeway_tailnet::auth_keys::{self, ID_BYTES, SECRET_BYTES};
use causeway_tailnet::{AuthKeySpec, TailnetInfo, TailnetState};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

static STATE: LazyLock<(TailnetState, String)> = LazyLock::new(|| {
    let mut state = TailnetState::new(TailnetInfo::new("fuzz", ula_from_random([1, 2, 3, 4, 5])));
    let spec = AuthKeySpec {
        reusable: true,
        tags: vec!["tag:router".into()],
        ..Default::default()
    };
    let (new, _) = state
        .create_auth_key(&spec, [0xab; ID_BYTES], [0xcd; SECRET_BYTES], NOW)
        .expect("valid spec");
    (state, new.secret)
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((id, secret)) = auth_keys::parse(text) {
        assert_eq!(id.len(), 2 * ID_BYTES);
        assert_eq!(secret.len(), 2 * SECRET_BYTES);
        assert!(id.bytes().chain(secret.bytes()).all(|b| b.is_ascii_hexdigit()));
    }
    if auth_keys::validate_tag(text).is_ok() {
        assert!(text.starts_with("tag:") && text.len() > 4);
    }
    let (state, issued) = &*STATE;
    if state.validate_auth_key(text, NOW).is_ok() {
        assert_eq!(text.trim(), issued.as_str(), "a different string was accepted");
    }
});
