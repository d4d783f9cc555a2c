//! # anneal-tensor
//!
//! n-dimensional arrays and their CPU kernels for the anneal deep-learning
//! toolkit. No notion of gradients lives here; `anneal-autograd` builds on it.
//!
//! A [`Tensor`] is a shape plus row-major contiguous storage behind an `Arc`:
//! clones are cheap and mutation is copy-on-write. Shapes are runtime values.
//! Layouts follow PyTorch: images NCHW, conv weights `[out, in/groups, kh, kw]`,
//! linear weights `[out, in]`. Every fallible function returns
//! [`Result`]`<_, `[`Error`]`>` whose message names the op and the shapes.
//!
//! ```
//! use anneal_tensor::Tensor;
//! let a = Tensor::from_vec(vec![1.0f32, 2., 3., 4., 5., 6.], &[2, 3])?;
//! let b = Tensor::from_vec(vec![10.0f32, 20., 30.], &[3])?;
//! let c = a.add(&b)?;                       // broadcasting, as NumPy
//! assert_eq!(c.to_vec(), vec![11., 22., 33., 14., 25., 36.]);
//! let p = a.matmul(&a.transpose(0, 1)?)?;   // [2, 3] × [3, 2]
//! assert_eq!(p.shape(), &[2, 2]);
//! let s = a.softmax(-1)?;
//! assert!((s.sum_axes(&[-1], false)?.to_vec()[0] - 1.0).abs() < 1e-6);
//! let e = a.matmul(&a).unwrap_err();
//! assert_eq!(e.to_string(), "matmul: [2, 3] × [2, 3]: inner dimensions 3 and 2 differ");
//! # Ok::<(), anneal_tensor::Error>(())
//! ```
//!
//! ## PyTorch equivalent
//!
//! | PyTorch | anneal |
//! |---|---|
//! | `torch.tensor(data).reshape(shape)` | [`Tensor::from_vec`] |
//! | `torch.zeros` / `ones` / `full` / `arange` / `eye` | [`Tensor::zeros`], [`Tensor::ones`], [`Tensor::full`], [`Tensor::arange`], [`Tensor::eye`] |
//! | `torch.randn` / `torch.rand` (seeded) | [`Tensor::randn`], [`Tensor::rand_uniform`] |
//! | `x.reshape`, `x.permute`, `x.transpose` | [`Tensor::reshape`], [`Tensor::permute`], [`Tensor::transpose`] |
//! | `x.squeeze`, `x.unsqueeze`, `x.expand` | [`Tensor::squeeze`], [`Tensor::unsqueeze`], [`Tensor::broadcast_to`] |
//! | `x.narrow`, `x[a:b:s]`, `index_select`, `gather`, `scatter_add` | [`Tensor::narrow`], [`Tensor::slice`], [`Tensor::index_select`], [`Tensor::gather`], [`Tensor::scatter_add`] |
//! | `torch.cat`, `torch.stack`, `split`, `chunk`, `F.pad` | [`Tensor::concat`], [`Tensor::stack`], [`Tensor::split`], [`Tensor::chunk`], [`Tensor::pad`] |
//! | `a + b`, `a * b`, … (broadcasting) | [`Tensor::add`], [`Tensor::mul`], … |
//! | `torch.where`, `masked_fill`, `a > b` | [`Tensor::where_cond`], [`Tensor::masked_fill`], [`Tensor::gt`] |
//! | `x.sum(dim, keepdim)`, `mean`, `var(unbiased)`, `amax`, `amin` | [`Tensor::sum_axes`], [`Tensor::mean_axes`], [`Tensor::var_axes`], [`Tensor::max_axes`], [`Tensor::min_axes`] |
//! | `argmax`, `logsumexp`, `softmax`, `log_softmax` | [`Tensor::argmax`], [`Tensor::logsumexp_axes`], [`Tensor::softmax`], [`Tensor::log_softmax`] |
//! | `torch.matmul`, `F.linear` | [`Tensor::matmul`], [`Tensor::linear`] |
//! | `F.conv1d`, `F.conv2d` | [`Tensor::conv1d`], [`Tensor::conv2d`] |
//! | `torch.nn.grad.conv2d_input` / `conv2d_weight` | [`Tensor::conv2d_input_grad`], [`Tensor::conv2d_weight_grad`] |
//! | `F.max_pool2d(return_indices=True)`, `F.avg_pool2d` | [`Tensor::max_pool2d`], [`Tensor::avg_pool2d`] |
//!
//! ## Threads
//!
//! Large element-wise ops, reductions, the batch of a convolution and large
//! GEMMs run on rayon's current pool; small tensors stay on the calling
//! thread. Results are bit-identical at any thread count: work is split at
//! boundaries fixed by the shapes, never by the number of threads.

#![warn(missing_docs)]

mod attention;
mod buffers;
mod conv;
mod display;
mod element;
mod elementwise;
mod error;
#[cfg(target_arch = "x86_64")]
mod gemm_avx512;
mod matmul;
mod norm;
mod parallel;
mod pool;
mod reduce;
mod rnn;
mod shape;
mod shape_ops;
mod simd_math;
mod small_gemm;
mod tensor;

pub use attention::SelfAttention;
pub use buffers::{buffer_cache_bytes, set_buffer_cache_limit};
pub use conv::{conv_output_size, Conv1dParams, Conv2dParams};
pub use element::{DType, Element, Scalar};
pub use elementwise::{gelu_scalar, gelu_tanh_scalar, sigmoid_scalar};
pub use error::{Error, Result};
pub use norm::{LayerNormGrads, LayerNormOutput};
pub use parallel::PARALLEL_THRESHOLD;
pub use pool::Pool2dParams;
pub use rnn::{LstmSequence, LstmSequenceGrads};
pub use shape::{
    broadcast_shapes, checked_numel, contiguous_strides, normalize_axes, normalize_axis,
    shape_to_string, Dim,
};
pub use tensor::Tensor;
