//! Data: the bundled UCI digits, a stratified split, readers for users' own
//! IDX (MNIST-format) and CSV files, and synthetic sequence tasks.

mod csv;
mod digits;
mod idx;
mod split;
mod synthetic;

pub use csv::{parse_csv, read_csv};
pub use digits::{load_digits, DIGITS_SHA256};
pub use idx::{parse_idx, read_idx, IdxArray};
pub use split::{stratified_split, Split};
pub use synthetic::{sequence_task, SequenceTask};

use anneal_tensor::Tensor;

/// A labelled classification data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Inputs, first axis the sample (`[N, 1, H, W]` for images, `[N, F]` for tables).
    pub inputs: Tensor<f32>,
    /// One class index per sample.
    pub labels: Vec<usize>,
    /// Number of classes (labels are below it).
    pub num_classes: usize,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The samples at `indices`, in that order. Errors on an index past the
    /// end, or if `inputs` and `labels` disagree on the number of samples.
    pub fn subset(&self, indices: &[usize]) -> crate::Result<Dataset> {
        let rows = self.inputs.shape().first().copied().unwrap_or(0);
        if rows != self.labels.len() {
            return Err(crate::Error::Invalid(format!(
                "data set: {rows} inputs but {} labels",
                self.labels.len()
            )));
        }
        Ok(Dataset {
            inputs: self.inputs.index_select(0, indices)?,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            num_classes: self.num_classes,
        })
    }
}
