//! The command-line tool's error: one line, naming the file, the option or the row at fault.

use crate::io::atomic::WriteError;
use crate::io::values::ArrayError;
use label_smoothing::LossError;
use std::path::PathBuf;

/// Everything that makes an `lsmooth` command fail. Every one exits with status 2.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An array file could not be read or written, or is malformed.
    #[error(transparent)]
    Array(#[from] ArrayError),
    /// An output file could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// An input file's content does not fit the others (shape mismatch, bad label, bad weight...).
    #[error("{}: {message}", crate::io::show_path(path))]
    Input {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An invalid option value.
    #[error("{0}")]
    Usage(String),
    /// A dataset file is missing or malformed.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// Training failed (a non-finite loss, a tensor error).
    #[error("{0}")]
    Train(String),
    /// The loss rejected its configuration.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// The report could not be written to standard output.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// The machine refused what the command needed (threads), or a result could not be encoded.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    /// An error about an input file.
    pub fn input(path: &std::path::Path, message: impl Into<String>) -> Self {
        CliError::Input {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
