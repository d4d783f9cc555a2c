//! The IDX format of MNIST (LeCun et al.): a 4-byte magic `0 0 type ndim`,
//! `ndim` big-endian u32 extents, then the data big-endian.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A decoded IDX array, values widened to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Extents.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f64>,
}

/// Decodes IDX bytes. Every size is checked against the file length before
/// anything is allocated, so a lying header is an error, not a huge allocation.
pub fn parse_idx(bytes: &[u8], source: &str) -> Result<IdxArray> {
    let err = |offset: u64, message: String| Error::Format {
        path: PathBuf::from(source),
        offset,
        message,
    };
    if bytes.len() < 4 {
        return Err(err(
            0,
            format!(
                "file has {} bytes, too short for the 4-byte magic",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(
            0,
            format!(
                "magic starts {:#04x} {:#04x}, expected 0 0",
                bytes[0], bytes[1]
            ),
        ));
    }
    let width = match bytes[2] {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        t => return Err(err(2, format!("unknown data type code {t:#04x}"))),
    };
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(err(
            4,
            format!(
                "header needs {header} bytes for {ndim} dimensions, file has {}",
                bytes.len()
            ),
        ));
    }
    let mut shape = Vec::with_capacity(ndim);
    let mut count: u64 = 1;
    for d in 0..ndim {
        let o = 4 + 4 * d;
        let v = u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as u64;
        count = count
            .checked_mul(v)
            .ok_or_else(|| err(o as u64, "element count overflows".into()))?;
        shape.push(v as usize);
    }
    let need = count
        .checked_mul(width)
        .and_then(|b| b.checked_add(header as u64))
        .ok_or_else(|| err(4, "data size overflows".into()))?;
    if need != bytes.len() as u64 {
        return Err(err(
            header as u64,
            format!(
                "header promises {count} elements ({need} bytes in all) but the file has {} bytes",
                bytes.len()
            ),
        ));
    }
    let body = &bytes[header..];
    let data: Vec<f64> = match bytes[2] {
        0x08 => body.iter().map(|&b| b as f64).collect(),
        0x09 => body.iter().map(|&b| b as i8 as f64).collect(),
        0x0B => body
            .chunks_exact(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]) as f64)
            .collect(),
        0x0C => body
            .chunks_exact(4)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        0x0D => body
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        _ => body
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect(),
    };
    Ok(IdxArray { shape, data })
}

/// Reads an IDX file (see [`parse_idx`]).
pub fn read_idx(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_idx(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lies() {
        let mut f = vec![0u8, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3];
        f.extend([1, 2, 3, 4, 5, 6]);
        let a = parse_idx(&f, "x.idx").unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1., 2., 3., 4., 5., 6.]);
        let e = parse_idx(&f[..15], "x.idx").unwrap_err();
        assert_eq!(e.to_string(), "x.idx: byte 12: header promises 6 elements (18 bytes in all) but the file has 15 bytes");
        let huge = [
            0u8, 0, 0x08, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(parse_idx(&huge, "h").is_err());
        assert!(parse_idx(&[0, 0, 0x07, 1], "t").is_err());
        assert!(parse_idx(&[1, 0], "t").is_err());
    }
}
