//! NumPy-style printing: nested brackets, aligned columns, and `...` in the
//! middle of long axes once a tensor has more than 1000 elements.

use std::fmt;

use crate::element::Scalar;
use crate::Tensor;

/// Tensors with more elements than this are summarised.
const THRESHOLD: usize = 1000;
/// Elements kept at each end of a summarised axis.
const EDGE: usize = 3;

fn format_elem<T: Scalar>(x: T) -> String {
    let s = format!("{x}");
    // NumPy writes integral floats as `1.`.
    match T::DTYPE {
        crate::DType::F32 | crate::DType::F64 if !s.contains(['.', 'e', 'E', 'N', 'n', 'i']) => {
            format!("{s}.")
        }
        _ => s,
    }
}

/// Aligns decimal points as NumPy does: integer parts padded on the left,
/// fractions on the right. Texts without a plain decimal point are left as is.
fn align(texts: &[String]) -> Vec<String> {
    let plain = |t: &String| t.contains('.') && !t.contains(['e', 'E', 'N', 'i']);
    if !texts.iter().all(plain) {
        return texts.to_vec();
    }
    let split = |t: &String| {
        let i = t.find('.').unwrap_or(t.len());
        (t[..i].len(), t[i + 1..].len())
    };
    let int_w = texts.iter().map(|t| split(t).0).max().unwrap_or(0);
    let frac_w = texts.iter().map(|t| split(t).1).max().unwrap_or(0);
    texts
        .iter()
        .map(|t| {
            let (i, f) = split(t);
            format!("{}{t}{}", " ".repeat(int_w - i), " ".repeat(frac_w - f))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn write_axis(
    out: &mut String,
    data: &[String],
    shape: &[usize],
    strides: &[usize],
    offset: usize,
    axis: usize,
    width: usize,
    summarise: bool,
) {
    let n = shape[axis];
    let picks: Vec<Option<usize>> = if summarise && n > 2 * EDGE {
        (0..EDGE)
            .map(Some)
            .chain([None])
            .chain((n - EDGE..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    };
    out.push('[');
    let last_axis = axis + 1 == shape.len();
    let indent = " ".repeat(axis + 1);
    for (k, pick) in picks.iter().enumerate() {
        if k > 0 {
            if last_axis {
                out.push(' ');
            } else {
                let blank_lines = shape.len() - axis - 1;
                out.push_str(&"\n".repeat(blank_lines));
                out.push_str(&indent);
            }
        }
        match pick {
            None => out.push_str("..."),
            Some(i) => {
                let off = offset + i * strides[axis];
                if last_axis {
                    out.push_str(&format!("{:>width$}", data[off]));
                } else {
                    write_axis(out, data, shape, strides, off, axis + 1, width, summarise);
                }
            }
        }
    }
    out.push(']');
}

impl<T: Scalar> fmt::Display for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rank() == 0 {
            return write!(f, "{}", format_elem(self.as_slice()[0]));
        }
        if self.is_empty() {
            return write!(
                f,
                "[], shape={}",
                crate::shape::shape_to_string(self.shape())
            );
        }
        let summarise = self.numel() > THRESHOLD;
        let texts: Vec<String> = self.as_slice().iter().map(|&x| format_elem(x)).collect();
        let cells = align(&texts);
        let width = cells.iter().map(|c| c.chars().count()).max().unwrap_or(1);
        let mut s = String::new();
        write_axis(
            &mut s,
            &cells,
            self.shape(),
            &self.strides(),
            0,
            0,
            width,
            summarise,
        );
        f.write_str(&s)
    }
}

impl<T: Scalar> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor(shape={}, dtype={:?},\n{self})",
            crate::shape::shape_to_string(self.shape()),
            T::DTYPE
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    #[test]
    fn prints_like_numpy() {
        let t = Tensor::from_vec(vec![1.0f32, 2.5, -3.0, 4.0], &[2, 2]).unwrap();
        // numpy.array([[1, 2.5], [-3, 4]]) prints exactly this.
        assert_eq!(t.to_string(), "[[ 1.   2.5]\n [-3.   4. ]]");
        let v = Tensor::from_vec(vec![true, false], &[2]).unwrap();
        assert_eq!(v.to_string(), "[ true false]");
        assert_eq!(Tensor::scalar(2.0f64).to_string(), "2.");
    }

    #[test]
    fn elides_large_tensors() {
        let t = Tensor::<f32>::arange(0.0, 2000.0, 1.0).unwrap();
        assert_eq!(t.to_string(), "[   0.    1.    2. ... 1997. 1998. 1999.]");
        let m = Tensor::<f32>::zeros(&[100, 100]).unwrap().to_string();
        assert_eq!(m.lines().count(), 7);
        assert!(m.contains("..."));
    }
}
