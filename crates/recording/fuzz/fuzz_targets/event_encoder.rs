//! Terminal output as the producer reads it from a pseudo-terminal: cut
//! into reads, encoded as asciicast v2 `"o"` events. First byte: read size
//! (1..=128). Checks every line is a valid event and that the events carry
//! exactly the lossy UTF-8 decoding of the whole output.
#![no_main]

use std::time::Duration;

use causeway_recording::{EventEncoder, validate_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, output)) = data.split_first() else {
        return;
    };
    let read = usize::from(control & 0x7f) + 1;
    let mut encoder = EventEncoder::new();
    let mut text = String::new();
    let lines = output
        .chunks(read)
        .filter_map(|chunk| encoder.output(chunk, Duration::from_millis(5)))
        .collect::<Vec<_>>()
        .into_iter()
        .chain(encoder.finish(Duration::from_millis(5)));
    for line in lines {
        let body = line.strip_suffix(b"\n").expect("an event line ends in a newline");
        assert_eq!(validate_event(body, 2), Ok(()));
        let (_, code, data): (f64, String, String) =
            serde_json::from_slice(body).expect("an event decodes");
        assert_eq!(code, "o");
        text.push_str(&data);
    }
    assert_eq!(text, String::from_utf8_lossy(output));
});
