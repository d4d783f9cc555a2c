//! # anneal-layers
//!
//! The [`Module`] trait and the layers, activations, losses and
//! initialisers of the anneal toolkit, with PyTorch's layouts and
//! `state_dict()` names so that PyTorch weights load unchanged.
//!
//! ```
//! use anneal_autograd::Var;
//! use anneal_layers::{Conv2dConfig, Flatten, LinearConfig, MaxPool2d, Module, ModuleExt, Relu, Sequential};
//! use anneal_tensor::Tensor;
//! use rand::SeedableRng;
//!
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let net = Sequential::<f32>::new()
//!     .push(Conv2dConfig::new(1, 8, 3).with_padding(1).init(&mut rng)?)
//!     .push(Relu)
//!     .push(MaxPool2d::new(2))
//!     .push(Flatten::default())
//!     .push(LinearConfig::new(8 * 4 * 4, 10).init(&mut rng)?);
//! let x = Var::constant(Tensor::zeros(&[2, 1, 8, 8])?);
//! assert_eq!(net.forward(&x)?.shape(), &[2, 10]);
//! let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["0.weight", "0.bias", "4.weight", "4.bias"]);
//! # Ok::<(), anneal_tensor::Error>(())
//! ```
//!
//! ## PyTorch equivalent
//!
//! | PyTorch | anneal |
//! |---|---|
//! | `nn.Module.forward` in `eval()` / `train()` mode | [`Module::forward`] / [`Module::forward_train`] |
//! | `named_parameters()`, `state_dict()` names | [`ModuleExt::named_parameters`], [`Module::visit`] |
//! | `nn.Sequential` | [`Sequential`] |
//! | `nn.Linear`, `nn.Conv1d`, `nn.Conv2d`, `nn.ConvTranspose2d` | [`Linear`], [`Conv1d`], [`Conv2d`], [`ConvTranspose2d`] |
//! | `nn.BatchNorm1d/2d`, `nn.LayerNorm`, `nn.GroupNorm`, `nn.RMSNorm` | [`BatchNorm`], [`LayerNorm`], [`GroupNorm`], [`RmsNorm`] |
//! | `nn.MaxPool2d`, `nn.AvgPool2d`, `nn.AdaptiveAvgPool2d(1)`, `nn.Flatten` | [`MaxPool2d`], [`AvgPool2d`], [`AdaptiveAvgPool2d`], [`Flatten`] |
//! | `nn.Dropout`, `nn.Embedding` | [`Dropout`], [`Embedding`] |
//! | `nn.ReLU`, `LeakyReLU`, `GELU`, `SiLU`, `Sigmoid`, `Tanh`, `Softmax`, `LogSoftmax` | [`Relu`], [`LeakyRelu`], [`Gelu`], [`Silu`], [`Sigmoid`], [`Tanh`], [`Softmax`], [`LogSoftmax`] |
//! | `F.cross_entropy`, `nll_loss`, `mse_loss`, `l1_loss`, `huber_loss`, `smooth_l1_loss`, `binary_cross_entropy_with_logits` | [`cross_entropy`], [`nll_loss`], [`mse_loss`], [`l1_loss`], [`huber_loss`], [`smooth_l1_loss`], [`bce_with_logits`] |
//! | `nn.init.*` | [`init`] |
//! | `model.state_dict()`, `safetensors.torch.save_file` / `load_file` + `load_state_dict(strict)` | [`state_dict`], [`save_safetensors`], [`load_safetensors`] |

#![warn(missing_docs)]

/// Mixes a seed with a stream index (SplitMix64's finaliser), so that child
/// modules and epochs get independent, reproducible seeds.
pub fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

mod activation;
mod attention;
mod conv;
mod dropout;
mod embedding;
mod gradcheck;
mod hooks;
pub mod init;
mod linear;
mod loss;
mod module;
mod norm;
mod pool;
mod positional;
mod rnn;
mod sequential;
mod state_dict;
mod transformer;

pub use activation::{Gelu, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu, Softmax, Tanh};
pub use attention::*;
pub use conv::{
    Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig, Padding,
};
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use gradcheck::{gradcheck_module, ModuleGradcheckFailure};
pub use hooks::{FakeQuantHook, HookableLayer, InferenceKernel, InputObserver, LayerHooks};
pub use linear::{Linear, LinearConfig};
pub use loss::{
    bce_with_logits, cross_entropy, huber_loss, l1_loss, mse_loss, nll_loss, smooth_l1_loss,
    CrossEntropyOptions, Reduction,
};
pub use module::{join, Entry, EntryMut, Module, ModuleExt};
pub use norm::{BatchNorm, BatchNormConfig, GroupNorm, LayerNorm, RmsNorm};
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, Flatten, MaxPool2d};
pub use positional::*;
pub use rnn::*;
pub use sequential::Sequential;
pub use state_dict::{
    load_safetensors, load_safetensors_bytes, save_safetensors, state_dict, to_safetensors_bytes,
    write_atomically, write_atomically_with, LoadReport, StateValue,
};
pub use transformer::*;
