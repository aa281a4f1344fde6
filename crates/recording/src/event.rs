//! asciicast v2 event lines: `[seconds, "code", "data"]`.

use serde::Deserialize;

/// Why an event line was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    /// The line is not a JSON array of a number and two strings.
    #[error("event line {line} is not an asciicast v2 event [time, code, data]: {reason}")]
    Shape {
        /// 1-based line number in the recording (the header is line 1).
        line: u64,
        /// What the JSON parser said.
        reason: String,
    },
    /// The time offset is negative or not finite.
    #[error("event line {line} has time {time}, expected seconds >= 0")]
    Time {
        /// 1-based line number in the recording.
        line: u64,
        /// The offending time, as text.
        time: String,
    },
}

#[derive(Deserialize)]
struct Event(f64, String, String);

/// Validates one event line (without its newline); `line` is for the error.
pub fn validate_event(bytes: &[u8], line: u64) -> Result<(), EventError> {
    let Event(time, _code, _data) =
        serde_json::from_slice(bytes).map_err(|e| EventError::Shape {
            line,
            reason: e.to_string(),
        })?;
    if !time.is_finite() || time < 0.0 {
        return Err(EventError::Time {
            line,
            time: time.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_output_and_resize_events() {
        assert_eq!(validate_event(br#"[0.25,"o","hello\r\n"]"#, 2), Ok(()));
        assert_eq!(validate_event(br#"[3,"r","100x40"]"#, 3), Ok(()));
    }

    #[test]
    fn accepts_go_encodings() {
        // Go's encoding/json writes small floats with exponents and escapes <, >, &.
        assert_eq!(
            validate_event(br#"[1.5e-05,"o","\u003cb\u003e \u0026"]"#, 2),
            Ok(())
        );
    }

    #[test]
    fn refuses_a_negative_time() {
        assert_eq!(
            validate_event(br#"[-1,"o","x"]"#, 5),
            Err(EventError::Time {
                line: 5,
                time: "-1".to_owned()
            })
        );
    }

    #[test]
    fn refuses_a_short_array() {
        let err = validate_event(br#"[1,"o"]"#, 2).expect_err("two elements");
        assert!(matches!(err, EventError::Shape { line: 2, .. }), "{err:?}");
    }

    proptest! {
        #[test]
        fn accepts_what_tailscale_writes(t in 0.0f64..1e6, code in "[oirm]", data in "\\PC{0,200}") {
            let line = serde_json::to_vec(&(t, code, data)).expect("serializes");
            prop_assert_eq!(validate_event(&line, 2), Ok(()));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = validate_event(&bytes, 2);
        }
    }
}
