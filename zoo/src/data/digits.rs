//! The UCI "Optical Recognition of Handwritten Digits" set (Alpaydin &
//! Kaynak 1998, CC BY 4.0), embedded in the binary: 1,797 images of 8×8
//! pixel counts 0..16, as scikit-learn ships it.

use std::io::Read;
use std::path::PathBuf;

use anneal_tensor::Tensor;
use sha2::{Digest, Sha256};

use super::csv::parse_csv;
use super::Dataset;
use crate::{Error, Result};

/// sha256 of `zoo/data/digits.csv.gz`.
pub const DIGITS_SHA256: &str = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22";

static DIGITS_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// Hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads the bundled digits, verifying their checksum: inputs `[1797, 1, 8, 8]`
/// scaled to `[0, 1]` (pixel count / 16), labels 0..9.
pub fn load_digits() -> Result<Dataset> {
    let found = sha256_hex(DIGITS_GZ);
    if found != DIGITS_SHA256 {
        return Err(Error::Checksum {
            what: "bundled digits.csv.gz".into(),
            expected: DIGITS_SHA256.into(),
            found,
        });
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(DIGITS_GZ)
        .read_to_string(&mut text)
        .map_err(|source| Error::Io {
            path: PathBuf::from("digits.csv.gz"),
            source,
        })?;
    let (features, labels) = parse_csv(&text, 64, "digits.csv.gz")?;
    let n = labels.len();
    let inputs = Tensor::from_vec(features, &[n, 64])?
        .div_scalar(16.0)
        .reshape(&[n, 1, 8, 8])?;
    Ok(Dataset {
        inputs,
        labels,
        num_classes: 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_match_their_provenance() {
        let d = load_digits().unwrap();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.inputs.shape(), &[1797, 1, 8, 8]);
        let mut counts = [0usize; 10];
        for &l in &d.labels {
            counts[l] += 1;
        }
        // shared/data/README.md: 174 to 183 images per digit.
        assert!(
            counts.iter().all(|&c| (174..=183).contains(&c)),
            "{counts:?}"
        );
        assert!(d.inputs.max_all().unwrap() <= 1.0 && d.inputs.min_all().unwrap() >= 0.0);
    }
}
