//! The exit codes scripts rely on, and the one error type every command returns.

use taskq_runtime::StoreError;

/// The command did what it was asked.
pub const OK: u8 = 0;
/// The operation failed: the task or run is not in a state it applies to, a person
/// declined the confirmation, or the store failed during the operation.
pub const FAILED: u8 = 1;
/// Usage: a bad argument or store URL, or a destructive command without `--yes` in a
/// non-interactive run (clap's own usage errors exit with 2 as well).
pub const USAGE: u8 = 2;
/// No such task, run or queue.
pub const NOT_FOUND: u8 = 3;
/// The store cannot be opened: the database is unreachable or did not answer within
/// `--connect-timeout`, the SQLite file does not exist, or its schema is newer than this
/// build knows.
pub const UNREACHABLE: u8 = 4;

/// Why a command failed: its exit code, a stable kind for `--json`, and a message for
/// people.
#[derive(Debug)]
pub struct Failure {
    /// One of the exit codes above (never [`OK`]).
    pub code: u8,
    /// `failed`, `usage`, `not_found` or `unreachable`: the code's name in `--json`.
    pub kind: &'static str,
    /// What went wrong, for people (a store URL in it has its password hidden).
    pub message: String,
}

impl Failure {
    /// A failure of kind `code` saying `message`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        let kind = match code {
            USAGE => "usage",
            NOT_FOUND => "not_found",
            UNREACHABLE => "unreachable",
            _ => "failed",
        };
        Failure {
            code,
            kind,
            message: message.into(),
        }
    }

    /// A store that could not be opened: a bad URL is usage, anything else unreachable.
    pub fn opening(e: StoreError) -> Failure {
        match e {
            StoreError::BadUrl { .. } => Failure::new(USAGE, e.to_string()),
            e => Failure::new(UNREACHABLE, format!("cannot open the store: {e}")),
        }
    }
}

impl From<StoreError> for Failure {
    /// An operation's error: not found is [`NOT_FOUND`], a bad URL [`USAGE`], anything
    /// else (a conflict, a refused value, a backend error) [`FAILED`].
    fn from(e: StoreError) -> Failure {
        let code = match &e {
            StoreError::NotFound(_) => NOT_FOUND,
            StoreError::BadUrl { .. } => USAGE,
            _ => FAILED,
        };
        Failure::new(code, e.to_string())
    }
}
