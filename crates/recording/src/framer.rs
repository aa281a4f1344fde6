//! Cuts a byte stream into complete `\n`-terminated lines, bounding the
//! length of any one line so a sender cannot make us buffer without limit.

/// Why the stream cannot be framed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A line grew past the configured maximum before its newline arrived.
    #[error("line {line} is longer than the maximum of {max} bytes")]
    Oversized {
        /// 1-based line number.
        line: u64,
        /// The configured maximum line length in bytes.
        max: usize,
    },
    /// The stream ended in the middle of a line.
    #[error("stream ended inside line {line} after {bytes} bytes, expected a newline")]
    Truncated {
        /// 1-based number of the unfinished line.
        line: u64,
        /// Bytes of the unfinished line that were received.
        bytes: usize,
    },
}

/// Buffers stream bytes and hands out the complete lines among them.
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` that end with a newline.
    complete: usize,
    /// Lines completed so far, over the whole stream.
    lines: u64,
}

impl LineFramer {
    /// A framer refusing lines longer than `max_line` bytes (newline excluded).
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            buf: Vec::new(),
            complete: 0,
            lines: 0,
        }
    }

    /// Adds received bytes; fails once a line exceeds the maximum.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FrameError> {
        let mut partial = self.buf.len() - self.complete;
        for (i, byte) in data.iter().enumerate() {
            if *byte == b'\n' {
                self.lines += 1;
                self.complete = self.buf.len() + i + 1;
                partial = 0;
            } else {
                partial += 1;
                if partial > self.max_line {
                    return Err(FrameError::Oversized {
                        line: self.lines + 1,
                        max: self.max_line,
                    });
                }
            }
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The complete lines received and not yet consumed, newlines included.
    pub fn complete(&self) -> &[u8] {
        &self.buf[..self.complete]
    }

    /// The complete lines not yet consumed, each without its newline.
    pub fn lines(&self) -> impl Iterator<Item = &[u8]> {
        self.complete()
            .split(|b| *b == b'\n')
            .take(self.complete().iter().filter(|b| **b == b'\n').count())
    }

    /// Bytes held: complete lines not yet consumed and the unfinished line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Number of lines completed over the whole stream so far.
    pub fn lines_completed(&self) -> u64 {
        self.lines
    }

    /// Drops the complete lines once the caller has stored them.
    pub fn consume_complete(&mut self) {
        self.buf.drain(..self.complete);
        self.complete = 0;
    }

    /// Declares the end of the stream: an unfinished line is an error.
    pub fn finish(&self) -> Result<(), FrameError> {
        let partial = self.buf.len() - self.complete;
        if partial == 0 {
            return Ok(());
        }
        Err(FrameError::Truncated {
            line: self.lines + 1,
            bytes: partial,
        })
    }
}

/// Length of the longest prefix of `data` that ends with a newline: what of
/// a spool file survives a crash in the middle of a write.
pub fn complete_prefix_len(data: &[u8]) -> usize {
    data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn owned(f: &LineFramer) -> Vec<Vec<u8>> {
        f.lines().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn hands_out_lines_split_across_pushes() {
        let mut f = LineFramer::new(100);
        f.push(b"hea").expect("fits");
        assert_eq!(f.complete(), b"");
        f.push(b"der\n[1,").expect("fits");
        assert_eq!(owned(&f), vec![b"header".to_vec()]);
        f.consume_complete();
        f.push(b"\"o\",\"x\"]\n").expect("fits");
        assert_eq!(f.complete(), b"[1,\"o\",\"x\"]\n");
        assert_eq!(f.lines_completed(), 2);
        assert_eq!(f.finish(), Ok(()));
    }

    #[test]
    fn refuses_an_oversized_line_before_its_newline() {
        let mut f = LineFramer::new(4);
        f.push(b"abcd\nabc").expect("fits");
        assert_eq!(
            f.push(b"de"),
            Err(FrameError::Oversized { line: 2, max: 4 })
        );
    }

    #[test]
    fn reports_a_truncated_last_line() {
        let mut f = LineFramer::new(100);
        f.push(b"one\ntwo\nthr").expect("fits");
        assert_eq!(f.finish(), Err(FrameError::Truncated { line: 3, bytes: 3 }));
    }

    #[test]
    fn finds_the_complete_prefix() {
        assert_eq!(complete_prefix_len(b"a\nb\nc"), 4);
        assert_eq!(complete_prefix_len(b"abc"), 0);
        assert_eq!(complete_prefix_len(b"a\n"), 2);
    }

    proptest! {
        /// However the stream is cut, the framer yields exactly its lines.
        #[test]
        fn chunking_does_not_change_lines(
            lines in proptest::collection::vec("[^\n]{0,30}", 0..20),
            tail in "[^\n]{0,10}",
            cuts in proptest::collection::vec(0usize..400, 0..10),
        ) {
            let mut stream: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
            stream.extend_from_slice(tail.as_bytes());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut f = LineFramer::new(200);
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                f.push(&stream[at..cut]).expect("lines fit");
                got.extend(owned(&f));
                f.consume_complete();
                at = cut;
            }
            let want: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
            prop_assert_eq!(got, want);
            if tail.is_empty() {
                prop_assert_eq!(f.finish(), Ok(()));
            } else {
                prop_assert_eq!(f.finish(), Err(FrameError::Truncated { line: lines.len() as u64 + 1, bytes: tail.len() }));
            }
        }

        /// No line longer than the maximum is ever handed out.
        #[test]
        fn never_hands_out_an_oversized_line(bytes in proptest::collection::vec(any::<u8>(), 0..500), max in 1usize..50) {
            let mut f = LineFramer::new(max);
            for chunk in bytes.chunks(7) {
                if f.push(chunk).is_err() { break; }
                prop_assert!(f.lines().all(|l| l.len() <= max));
                f.consume_complete();
            }
        }
    }
}
