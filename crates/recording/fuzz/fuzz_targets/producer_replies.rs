//! The recorder's reply stream as the producer reads it: lines into
//! `parse_reply`, acks and errors into the ack watchdog, with bytes sent
//! in between. First byte: how many bytes are sent before each reply.
//! Checks the watchdog never counts more acked than sent, and that once it
//! has failed it stays failed and asks for no more wake-ups.
#![no_main]

use std::time::{Duration, Instant};

use causeway_recording::AckWatchdogState;
use causeway_recording::producer::parse_reply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, replies)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let mut watchdog = AckWatchdogState::new(Duration::from_secs(30));
    for (i, line) in replies.split(|b| *b == b'\n').enumerate() {
        let now = t0 + Duration::from_millis(i as u64 * 100);
        watchdog.handle_sent(u64::from(step), now);
        if let Ok(frame) = parse_reply(line) {
            watchdog.handle_reply(frame, now);
        }
        let failed = watchdog.poll_failure(now).is_some();
        if failed {
            assert_eq!(watchdog.poll_timeout(), None, "a failed watchdog asks for no wake-up");
        } else {
            assert!(watchdog.acked() <= watchdog.sent(), "acked more than was sent");
        }
    }
});
