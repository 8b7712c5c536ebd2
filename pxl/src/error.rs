//! Compile errors: the user's mistake, where it is, and what to do.

/// A mistake in a script, at a line and column (both 1-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct CompileError {
    /// Line of the mistake.
    pub line: u64,
    /// Column of the mistake.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}
