//! One module per subcommand.

pub mod check_history;
pub mod compare;
pub mod coordinator;
pub mod core_latency;
pub mod experiment;
pub mod migrate;
pub mod server;
pub mod simulate;
pub mod switch;
pub mod ycsb;

use std::fmt;

/// A user-facing error: says what went wrong and, where possible, what to do.
#[derive(Debug)]
pub struct CommandError(pub String);

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CommandError {}

impl From<std::io::Error> for CommandError {
    fn from(error: std::io::Error) -> Self {
        CommandError(error.to_string())
    }
}

pub fn fail<T>(message: impl Into<String>) -> Result<T, CommandError> {
    Err(CommandError(message.into()))
}
