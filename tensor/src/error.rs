//! The error type of every fallible tensor operation.

use std::fmt;

/// Formats a shape the way the error messages print it: `[2, 3]`.
pub(crate) fn fmt_shape(shape: &[usize]) -> String {
    let inner: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(", "))
}

/// What went wrong in a tensor operation. Every variant names the op.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The shapes of the operands do not fit together.
    ShapeMismatch {
        /// The operation, e.g. `"matmul"`.
        op: &'static str,
        /// The shapes involved, in argument order.
        shapes: Vec<Vec<usize>>,
        /// Why they do not fit, e.g. `"inner dimensions 3 and 4 differ"`.
        reason: String,
    },
    /// A buffer's length does not match the element count of the shape.
    DataLength {
        /// The operation.
        op: &'static str,
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// An axis is outside `-rank..rank`.
    AxisOutOfRange {
        /// The operation.
        op: &'static str,
        /// The axis as given.
        axis: isize,
        /// The rank of the tensor.
        rank: usize,
    },
    /// An index is outside `0..size` along an axis.
    IndexOutOfRange {
        /// The operation.
        op: &'static str,
        /// The index as given.
        index: usize,
        /// The length of the axis.
        size: usize,
        /// The axis indexed.
        axis: usize,
    },
    /// An argument has a value the operation cannot accept.
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong, naming the argument and its value.
        message: String,
    },
    /// A shape has more elements than fit in memory (`usize` overflow).
    TooLarge {
        /// The operation.
        op: &'static str,
        /// The offending shape.
        shape: Vec<usize>,
    },
}

impl Error {
    /// Shorthand for [`Error::ShapeMismatch`].
    pub fn shape(op: &'static str, shapes: &[&[usize]], reason: impl Into<String>) -> Self {
        Error::ShapeMismatch {
            op,
            shapes: shapes.iter().map(|s| s.to_vec()).collect(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            message: message.into(),
        }
    }

    /// The name of the operation that failed.
    pub fn op(&self) -> &'static str {
        match self {
            Error::ShapeMismatch { op, .. }
            | Error::DataLength { op, .. }
            | Error::AxisOutOfRange { op, .. }
            | Error::IndexOutOfRange { op, .. }
            | Error::InvalidArgument { op, .. }
            | Error::TooLarge { op, .. } => op,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ShapeMismatch { op, shapes, reason } => {
                let s: Vec<String> = shapes.iter().map(|s| fmt_shape(s)).collect();
                write!(f, "{op}: {}: {reason}", s.join(" × "))
            }
            Error::DataLength {
                op,
                shape,
                expected,
                got,
            } => write!(
                f,
                "{op}: shape {} needs {expected} elements but {got} were given",
                fmt_shape(shape)
            ),
            Error::AxisOutOfRange { op, axis, rank } => write!(
                f,
                "{op}: axis {axis} is out of range for a tensor of rank {rank}"
            ),
            Error::IndexOutOfRange {
                op,
                index,
                size,
                axis,
            } => write!(
                f,
                "{op}: index {index} is out of range for axis {axis} of length {size}"
            ),
            Error::InvalidArgument { op, message } => write!(f, "{op}: {message}"),
            Error::TooLarge { op, shape } => write!(
                f,
                "{op}: shape {} has more elements than fit in memory",
                fmt_shape(shape)
            ),
        }
    }
}

impl std::error::Error for Error {}

/// The result of a fallible tensor operation.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_message_matches_design() {
        let e = Error::shape(
            "matmul",
            &[&[2, 3], &[4, 5]],
            "inner dimensions 3 and 4 differ",
        );
        assert_eq!(
            e.to_string(),
            "matmul: [2, 3] × [4, 5]: inner dimensions 3 and 4 differ"
        );
        assert_eq!(e.op(), "matmul");
    }
}
