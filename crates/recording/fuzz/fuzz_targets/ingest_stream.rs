//! A recording stream as the recorder's ingest reads it: cut into chunks,
//! framed into lines, the first parsed as the header and the rest validated
//! as events. First byte: chunk size (1..=256) and, from its top bit, a
//! small or a large maximum line length.
#![no_main]

use causeway_recording::{CastHeader, LineFramer, validate_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(control & 0x7f) * 2 + 1;
    let max = if control & 0x80 == 0 { 64 } else { 4096 };
    let mut framer = LineFramer::new(max);
    let mut line_no = 0u64;
    let mut consumed = 0usize;
    for part in stream.chunks(chunk) {
        if framer.push(part).is_err() {
            return;
        }
        for line in framer.lines() {
            assert!(line.len() <= max, "a line longer than the maximum got through");
            assert!(!line.contains(&b'\n'));
            line_no += 1;
            if line_no == 1 {
                let _ = CastHeader::parse(line);
            } else {
                let _ = validate_event(line, line_no);
            }
        }
        consumed += framer.complete().len();
        assert_eq!(&stream[consumed - framer.complete().len()..consumed], framer.complete());
        framer.consume_complete();
    }
    assert_eq!(framer.lines_completed(), line_no);
    assert_eq!(framer.finish().is_ok(), consumed == stream.len());
});
