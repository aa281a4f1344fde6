//! Session recordings, sans-IO: the asciicast v2 header that carries a
//! session's identity, the framer that cuts an ingest stream into lines, the
//! ack schedule of the ingest protocol, the producer's event encoder and ack
//! watchdog, the storage key layout, the retention decision, and the web
//! UI's listing and live feed. Nothing here reads a clock, a socket or a
//! file: time comes in as `now`.

pub mod catalog;
pub mod event;
pub mod framer;
pub mod header;
pub mod ingest;
pub mod key;
pub mod live;
pub mod producer;
pub mod retention;

pub use catalog::{
    BadSessionId, FilterError, PAGE_SIZE, Page, SessionFilter, SessionId, SessionSummary,
    format_time, page, sort_sessions,
};
pub use event::{EventError, validate_event};
pub use framer::{FrameError, LineFramer, complete_prefix_len};
pub use header::{CastHeader, HeaderError};
pub use ingest::{AckFrame, HeaderTimeout, IngestState, Stalled};
pub use key::{ObjectKey, object_key, with_nonce};
pub use live::{LiveError, LiveFeedState};
pub use producer::{AckWatchdogState, EventEncoder, RecorderFailed, SessionInfo};
pub use retention::{RetentionPolicy, StoredRecording, expired};
