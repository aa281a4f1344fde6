//! Where the provisioner's words go: progress lines for people, and the
//! final result either as text or as one JSON document on stdout.

use std::io::Write;
use std::time::{Duration, Instant};

/// How the final result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text; progress on stdout.
    #[default]
    Text,
    /// One JSON document on stdout; progress on stderr.
    Json,
}

/// Prints a command's result on stdout, best effort: a closed pipe
/// (`provisioner status | head`) must not turn into a panic.
pub fn print_result(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Where progress lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressSink {
    /// Standard output (text mode).
    Stdout,
    /// Standard error (JSON mode, and tests).
    Stderr,
    /// Nowhere.
    Silent,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step changed something.
    Changed,
    /// Everything the step manages was already as wanted.
    Unchanged,
    /// The step only checked something, and it held.
    Checked,
    /// The step was not requested.
    Skipped,
}

/// Prints numbered progress lines: `[3/9] starting control ... ok (0.4 s)`.
#[derive(Debug)]
pub struct Progress {
    sink: ProgressSink,
    total: usize,
    current: usize,
    label: String,
    started: Option<Instant>,
    /// A `[i/n] label ... ` line waits for its outcome.
    open: bool,
}

impl Progress {
    /// A progress printer for `total` steps.
    pub fn new(sink: ProgressSink, total: usize) -> Self {
        Self {
            sink,
            total,
            current: 0,
            label: String::new(),
            started: None,
            open: false,
        }
    }

    /// Progress for the given output format: stdout for text, stderr for JSON.
    pub fn for_format(format: OutputFormat, total: usize) -> Self {
        let sink = match format {
            OutputFormat::Text => ProgressSink::Stdout,
            OutputFormat::Json => ProgressSink::Stderr,
        };
        Self::new(sink, total)
    }

    /// Starts the next step; prints `[i/n] label ...` without a newline.
    pub fn begin(&mut self, label: &str) {
        self.current += 1;
        self.label = label.to_owned();
        self.started = Some(Instant::now());
        let (i, n) = (self.current, self.total);
        self.write(&format!("[{i}/{n}] {label} ... "), false);
        self.open = true;
    }

    /// The step in progress, as `[i/n] label`, for error messages.
    pub fn current_step(&self) -> String {
        format!("[{}/{}] {}", self.current, self.total, self.label)
    }

    /// Ends the current step with its outcome and elapsed time.
    pub fn end(&mut self, outcome: StepOutcome) {
        let word = match outcome {
            StepOutcome::Changed => "ok",
            StepOutcome::Unchanged => "ok, unchanged",
            StepOutcome::Checked => "ok",
            StepOutcome::Skipped => "skipped",
        };
        let took = self.elapsed();
        self.reopen();
        self.write(&format!("{word} ({:.1} s)", took.as_secs_f64()), true);
    }

    /// Ends the current step as failed.
    pub fn fail(&mut self) {
        let took = self.elapsed();
        self.reopen();
        self.write(&format!("FAILED ({:.1} s)", took.as_secs_f64()), true);
    }

    /// An indented detail line below the current step (while a step runs,
    /// it goes on its own line and the step's line is repeated at its end).
    pub fn detail(&mut self, line: &str) {
        self.close();
        self.write(&format!("      {line}"), true);
    }

    /// A plain line.
    pub fn line(&mut self, line: &str) {
        self.close();
        self.write(line, true);
    }

    fn close(&mut self) {
        if self.open {
            self.write("", true);
            self.open = false;
        }
    }

    fn reopen(&mut self) {
        if !self.open {
            let (i, n, label) = (self.current, self.total, self.label.clone());
            self.write(&format!("[{i}/{n}] {label} ... "), false);
        }
        self.open = false;
    }

    fn elapsed(&self) -> Duration {
        self.started.map(|s| s.elapsed()).unwrap_or_default()
    }

    fn write(&self, text: &str, newline: bool) {
        // Progress is best effort: a closed pipe must not fail a deploy.
        let nl = if newline { "\n" } else { "" };
        match self.sink {
            ProgressSink::Stdout => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{text}{nl}");
                let _ = out.flush();
            }
            ProgressSink::Stderr => {
                let mut out = std::io::stderr().lock();
                let _ = write!(out, "{text}{nl}");
                let _ = out.flush();
            }
            ProgressSink::Silent => {}
        }
    }
}
