//! CSV of numeric features with an integer class label in the last column.

use std::path::{Path, PathBuf};

use anneal_tensor::Tensor;

use super::Dataset;
use crate::{Error, Result};

/// Parses `text`: every non-empty line holds `features` finite numbers and
/// then a non-negative integer label below `usize::MAX` (so that the class
/// count, the largest label plus one, exists). Returns the row-major
/// features and labels. Errors name the line (1-based) and the problem.
pub fn parse_csv(text: &str, features: usize, source: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let Some(columns) = features.checked_add(1) else {
        return Err(Error::Invalid(format!(
            "{source}: {features} feature columns is more than a line can hold"
        )));
    };
    let mut data = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let err = |message: String| Error::Parse {
            path: PathBuf::from(source),
            line: i + 1,
            message,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != columns {
            return Err(err(format!(
                "expected {columns} comma-separated values, found {}",
                fields.len()
            )));
        }
        for (j, f) in fields[..features].iter().enumerate() {
            let v: f32 = f
                .parse()
                .map_err(|_| err(format!("column {}: {f:?} is not a number", j + 1)))?;
            if !v.is_finite() {
                return Err(err(format!("column {}: {f:?} is not finite", j + 1)));
            }
            data.push(v);
        }
        let l = fields[features];
        let label: usize = l
            .parse()
            .map_err(|_| err(format!("label {l:?} is not a non-negative integer")))?;
        if label == usize::MAX {
            return Err(err(format!(
                "label {l} is too large: the class count would overflow"
            )));
        }
        labels.push(label);
    }
    Ok((data, labels))
}

/// Reads a CSV file of `features` numeric columns plus a label column into a
/// [`Dataset`] with inputs `[N, features]`.
pub fn read_csv(path: impl AsRef<Path>, features: usize) -> Result<Dataset> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let good = &bytes[..e.valid_up_to()];
        Error::Parse {
            path: path.to_path_buf(),
            line: 1 + good.iter().filter(|&&b| b == b'\n').count(),
            message: format!("byte {} is not UTF-8 text", e.valid_up_to()),
        }
    })?;
    let (data, labels) = parse_csv(text, features, &path.display().to_string())?;
    if labels.is_empty() {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: "no data rows".into(),
        });
    }
    let n = labels.len();
    // Labels are below usize::MAX (checked while parsing).
    let num_classes = labels.iter().max().map_or(0, |m| m + 1);
    Ok(Dataset {
        inputs: Tensor::from_vec(data, &[n, features])?,
        labels,
        num_classes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let e = parse_csv("1,2,0\n3,x,1\n", 2, "t.csv").unwrap_err();
        assert_eq!(e.to_string(), "t.csv:2: column 2: \"x\" is not a number");
        let e = parse_csv("1,2,0\n3,1\n", 2, "t.csv").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:2: expected 3 comma-separated values, found 2"
        );
        let e = parse_csv("1,2,-1\n", 2, "t.csv").unwrap_err();
        assert!(e.to_string().starts_with("t.csv:1: label"));
        let (d, l) = parse_csv("1, 2 ,3\n\n4,5,6\n", 2, "t.csv").unwrap();
        assert_eq!(d, vec![1.0, 2.0, 4.0, 5.0]);
        assert_eq!(l, vec![3, 6]);
    }
}
