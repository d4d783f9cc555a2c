//! The zoo's error type: tensor errors plus data and I/O problems with the
//! file and position at fault.

use std::fmt;
use std::path::PathBuf;

/// What went wrong in the zoo (data loading, training, checkpoints, the CLI).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A tensor, layer or optimiser error.
    Tensor(anneal_tensor::Error),
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A text file is malformed at a line.
    Parse {
        /// The file (or a name for embedded data).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A binary file is malformed at a byte offset.
    Format {
        /// The file.
        path: PathBuf,
        /// Byte offset of the problem.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A data file's checksum does not match.
    Checksum {
        /// Which data.
        what: String,
        /// The expected sha256 (hex).
        expected: String,
        /// The sha256 found.
        found: String,
    },
    /// Training produced a non-finite loss, gradient or weight.
    NonFinite {
        /// Global step (0-based) at which it happened.
        step: usize,
        /// What was non-finite: the loss, a named parameter's gradient, or a
        /// named parameter after the update.
        what: String,
    },
    /// A bad argument or configuration.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Tensor(e) => write!(f, "{e}"),
            Error::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Parse {
                path,
                line,
                message,
            } => write!(f, "{}:{line}: {message}", path.display()),
            Error::Format {
                path,
                offset,
                message,
            } => write!(f, "{}: byte {offset}: {message}", path.display()),
            Error::Checksum {
                what,
                expected,
                found,
            } => write!(f, "{what}: sha256 is {found}, expected {expected}"),
            Error::NonFinite { step, what } => write!(f, "non-finite {what} at step {step}"),
            Error::Invalid(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Tensor(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<anneal_tensor::Error> for Error {
    fn from(e: anneal_tensor::Error) -> Self {
        Error::Tensor(e)
    }
}

/// The zoo's result type.
pub type Result<T> = std::result::Result<T, Error>;
