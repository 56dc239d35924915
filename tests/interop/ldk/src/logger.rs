//! LDK's log lines on stderr, from a minimum level (both binaries).

use lightning::util::logger::{Level, Logger, Record};

/// Writes LDK's log records at `min` or above to stderr.
pub struct StderrLogger {
    /// The lowest level written.
    pub min: Level,
}

impl Logger for StderrLogger {
    fn log(&self, record: Record) {
        if record.level >= self.min {
            eprintln!(
                "ldk {} {}:{} {}",
                record.level, record.module_path, record.line, record.args
            );
        }
    }
}
