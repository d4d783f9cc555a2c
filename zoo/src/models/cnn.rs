//! The source material's CNN, done right, and a small modern CNN.

use anneal_autograd::Var;
use anneal_layers::{
    AdaptiveAvgPool2d, BatchNormConfig, Conv2dConfig, Dropout, Entry, EntryMut, Flatten,
    LinearConfig, MaxPool2d, Module, Relu, Sequential,
};
use anneal_tensor::{Element, Error, Result};
use rand::SeedableRng;

/// Configuration of [`SourceCnn`].
#[derive(Debug, Clone, PartialEq)]
pub struct SourceCnnConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub input_size: [usize; 2],
    /// Output classes.
    pub classes: usize,
    /// Channels of the three conv blocks.
    pub channels: [usize; 3],
    /// Widths of the two hidden dense layers.
    pub hidden: [usize; 2],
    /// Dropout before each hidden dense layer's output (0 disables it).
    pub dropout: f64,
    /// Seed of the initialisation and the dropout masks.
    pub seed: u64,
}

impl Default for SourceCnnConfig {
    fn default() -> Self {
        SourceCnnConfig {
            in_channels: 1,
            input_size: [8, 8],
            classes: 10,
            channels: [32, 64, 128],
            hidden: [1024, 512],
            dropout: 0.0,
            seed: 0,
        }
    }
}

impl SourceCnnConfig {
    /// Builds the model: three blocks of conv 3×3 (padding 1) + BatchNorm +
    /// ReLU, flatten, dense `hidden[0]` → `hidden[1]` (ReLU) → classes, raw
    /// logits out.
    pub fn init<T: Element>(&self) -> Result<SourceCnn<T>> {
        if self.classes == 0 || self.input_size.contains(&0) || self.in_channels == 0 {
            return Err(Error::invalid(
                "SourceCnn",
                format!("config {self:?} needs positive sizes"),
            ));
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                "SourceCnn",
                format!("dropout {} is outside [0, 1]", self.dropout),
            ));
        }
        let flat = [self.input_size[0], self.input_size[1]]
            .iter()
            .try_fold(self.channels[2], |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| {
                Error::invalid(
                    "SourceCnn",
                    format!(
                        "{} channels of {:?} features overflow usize",
                        self.channels[2], self.input_size
                    ),
                )
            })?;
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let mut features = Sequential::new();
        let mut c_in = self.in_channels;
        for &c in &self.channels {
            features = features
                .push(
                    Conv2dConfig::new(c_in, c, 3)
                        .with_padding(1)
                        .init::<T>(&mut rng)?,
                )
                .push(BatchNormConfig::new(c).init::<T>()?)
                .push(Relu);
            c_in = c;
        }
        let mut classifier = Sequential::new().push(Flatten::default());
        let mut width = flat;
        for (i, &h) in self.hidden.iter().enumerate() {
            classifier = classifier
                .push(LinearConfig::new(width, h).init::<T>(&mut rng)?)
                .push(Relu);
            if self.dropout > 0.0 {
                classifier = classifier.push(Dropout::new(
                    self.dropout,
                    self.seed.wrapping_add(1 + i as u64),
                )?);
            }
            width = h;
        }
        classifier = classifier.push(LinearConfig::new(width, self.classes).init::<T>(&mut rng)?);
        Ok(SourceCnn {
            features,
            classifier,
            config: self.clone(),
        })
    }
}

/// The source material's CNN: `features` (3 conv blocks) then `classifier`
/// (flatten and dense layers). State-dict names: `features.0.weight`,
/// `features.1.running_mean`, …, `classifier.1.weight`, ….
pub struct SourceCnn<T: Element = f32> {
    /// The convolutional blocks.
    pub features: Sequential<T>,
    /// Flatten and the dense head.
    pub classifier: Sequential<T>,
    /// The configuration.
    pub config: SourceCnnConfig,
}

/// Configuration of [`SmallCnn`].
#[derive(Debug, Clone, PartialEq)]
pub struct SmallCnnConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output classes.
    pub classes: usize,
    /// Channels of the two conv blocks.
    pub channels: [usize; 2],
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Seed of the initialisation and the dropout masks.
    pub seed: u64,
}

impl Default for SmallCnnConfig {
    fn default() -> Self {
        SmallCnnConfig {
            in_channels: 1,
            classes: 10,
            channels: [32, 64],
            dropout: 0.1,
            seed: 0,
        }
    }
}

impl SmallCnnConfig {
    /// Builds the model: two blocks of conv 3×3 + BatchNorm + ReLU + max-pool
    /// 2, global average pooling, dropout, dense → classes.
    pub fn init<T: Element>(&self) -> Result<SmallCnn<T>> {
        if self.classes == 0 || self.in_channels == 0 || self.channels.contains(&0) {
            return Err(Error::invalid(
                "SmallCnn",
                format!("config {self:?} needs positive sizes"),
            ));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let [c1, c2] = self.channels;
        let features = Sequential::new()
            .push(
                Conv2dConfig::new(self.in_channels, c1, 3)
                    .with_padding(1)
                    .init::<T>(&mut rng)?,
            )
            .push(BatchNormConfig::new(c1).init::<T>()?)
            .push(Relu)
            .push(MaxPool2d::new(2))
            .push(
                Conv2dConfig::new(c1, c2, 3)
                    .with_padding(1)
                    .init::<T>(&mut rng)?,
            )
            .push(BatchNormConfig::new(c2).init::<T>()?)
            .push(Relu)
            .push(MaxPool2d::new(2))
            .push(AdaptiveAvgPool2d);
        let classifier = Sequential::new()
            .push(Flatten::default())
            .push(Dropout::new(self.dropout, self.seed.wrapping_add(1))?)
            .push(LinearConfig::new(c2, self.classes).init::<T>(&mut rng)?);
        Ok(SmallCnn {
            features,
            classifier,
            config: self.clone(),
        })
    }
}

/// A small modern CNN that trains in seconds on 2 cores.
pub struct SmallCnn<T: Element = f32> {
    /// Conv/BN/ReLU/max-pool ×2 and global average pooling.
    pub features: Sequential<T>,
    /// Flatten, dropout and the dense layer.
    pub classifier: Sequential<T>,
    /// The configuration.
    pub config: SmallCnnConfig,
}

macro_rules! features_then_classifier {
    ($ty:ident, $name:literal) => {
        impl<T: Element> Module<T> for $ty<T> {
            fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
                if x.rank() != 4 || x.shape()[1] != self.config.in_channels {
                    return Err(Error::shape(
                        $name,
                        &[x.shape()],
                        format!("expected input [N, {}, H, W]", self.config.in_channels),
                    ));
                }
                self.classifier.forward(&self.features.forward(x)?)
            }
            fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
                if x.rank() != 4 || x.shape()[1] != self.config.in_channels {
                    return Err(Error::shape(
                        $name,
                        &[x.shape()],
                        format!("expected input [N, {}, H, W]", self.config.in_channels),
                    ));
                }
                let h = self.features.forward_train(x)?;
                self.classifier.forward_train(&h)
            }
            fn reseed(&mut self, seed: u64) {
                self.features.reseed(anneal_layers::mix_seed(seed, 0));
                self.classifier.reseed(anneal_layers::mix_seed(seed, 1));
            }
            fn visit_layers_mut<'a>(
                &'a mut self,
                prefix: &str,
                f: &mut dyn FnMut(&str, anneal_layers::HookableLayer<'a, T>),
            ) {
                self.features
                    .visit_layers_mut(&anneal_layers::join(prefix, "features"), f);
                self.classifier
                    .visit_layers_mut(&anneal_layers::join(prefix, "classifier"), f);
            }
            fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
                self.features
                    .visit(&anneal_layers::join(prefix, "features"), f);
                self.classifier
                    .visit(&anneal_layers::join(prefix, "classifier"), f);
            }
            fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
                self.features
                    .visit_mut(&anneal_layers::join(prefix, "features"), f);
                self.classifier
                    .visit_mut(&anneal_layers::join(prefix, "classifier"), f);
            }
        }
    };
}

features_then_classifier!(SourceCnn, "SourceCnn");
features_then_classifier!(SmallCnn, "SmallCnn");
