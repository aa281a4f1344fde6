//! huJSON policy text (`PUT /api/v1/policy`) into `Policy::parse`; a policy
//! that parses is also applied to a tailnet and queried. Never panics.
#![no_main]

use causeway_tailnet::addresses::ula_from_random;
use causeway_tailnet::{Policy, TailnetInfo, TailnetState};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // control refuses a body that is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text) else {
        return;
    };
    let tags = ["tag:router".to_owned(), "tag:exit".to_owned()];
    for prefix in ["0.0.0.0/0", "::/0", "10.0.0.0/8", "10.1.2.0/24", "fd00::/64"] {
        let prefix: IpNet = prefix.parse().expect("valid prefix");
        let _ = policy.auto_approves(&prefix, &tags);
    }
    let mut state = TailnetState::new(TailnetInfo::new("fuzz", ula_from_random([1, 2, 3, 4, 5])));
    state
        .set_policy(text, 1_700_000_000)
        .expect("a policy that parses is accepted");
    assert_eq!(state.policy(), &policy);
});
