//! Strategy search (`anneal tune`): successive halving over the optimiser,
//! the learning rate, the schedule, the L2 penalty and dropout, on a
//! validation split carved from the training data.
//!
//! The search draws `n` configurations from a seeded generator, trains them
//! all for `r` epochs, keeps the better half (by validation accuracy, ties by
//! validation loss, then by index), trains the survivors on to `2r` epochs,
//! and so on until one remains (Jamieson & Talwalkar, "Non-stochastic Best
//! Arm Identification and Hyperparameter Optimization", 2016). Survivors
//! continue from where they stopped rather than restarting, and every
//! schedule spans the final budget, so a survivor's run is bit-identical to
//! one uninterrupted run of the final budget: the winner's configuration,
//! written as JSON, re-runs with `anneal train --config`. The test split is
//! evaluated once, for the winner only.
//!
//! ```no_run
//! use anneal_zoo::tune::{digits_tune_split, tune, TuneConfig};
//! let data = digits_tune_split(0)?;
//! let result = tune(&TuneConfig::default(), &data.train, &data.val, &data.test, &mut |_| {})?;
//! println!("{}", result.table());
//! std::fs::write("best.json", result.best.to_json())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use anneal_layers::{mix_seed, Module};
use anneal_optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, CosineAnnealingLr, LrSchedule, OneCycleConfig,
    OneCycleLr, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig,
};
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::data::{load_digits, stratified_split, Dataset};
use crate::models::{SmallCnnConfig, SourceCnnConfig, TransformerClassifierConfig};
use crate::plot::{write_curves, Panel, Series};
use crate::registry::{build_model, defaults_for, MODEL_NAMES};
use crate::trainer::{evaluate, train, train_epochs, History, TrainConfig};
use crate::{Error, Result};

/// The optimisers `anneal train --optimizer` and the search use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerName {
    /// SGD with momentum 0.9.
    Sgd,
    /// Adam (PyTorch defaults, no weight decay).
    Adam,
    /// AdamW (PyTorch defaults, decoupled weight decay 1e-2).
    Adamw,
    /// RMSprop (PyTorch defaults).
    Rmsprop,
}

impl OptimizerName {
    /// Every optimiser, in the order the search draws from.
    pub const ALL: [OptimizerName; 4] = [
        OptimizerName::Sgd,
        OptimizerName::Adam,
        OptimizerName::Adamw,
        OptimizerName::Rmsprop,
    ];

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerName::Sgd => "sgd",
            OptimizerName::Adam => "adam",
            OptimizerName::Adamw => "adamw",
            OptimizerName::Rmsprop => "rmsprop",
        }
    }

    /// The learning-rate range the search draws from, log-uniformly.
    pub fn lr_range(self) -> (f64, f64) {
        match self {
            OptimizerName::Sgd => (1e-3, 1e-1),
            OptimizerName::Adam | OptimizerName::Adamw => (1e-4, 1e-2),
            OptimizerName::Rmsprop => (1e-4, 3e-3),
        }
    }
}

/// The learning-rate schedules `anneal train --schedule` and the search use;
/// each spans the run's epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleName {
    /// The same rate every epoch.
    Constant,
    /// Cosine annealing to 0 over the run.
    Cosine,
    /// One cycle, stepped per mini-batch as PyTorch's `OneCycleLR` is meant
    /// to be: up from lr/25 over the first 30 % of the batches, then down to
    /// lr/25e4 at the last.
    OneCycle,
}

impl ScheduleName {
    /// Every schedule, in the order the search draws from.
    pub const ALL: [ScheduleName; 3] = [
        ScheduleName::Constant,
        ScheduleName::Cosine,
        ScheduleName::OneCycle,
    ];

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleName::Constant => "constant",
            ScheduleName::Cosine => "cosine",
            ScheduleName::OneCycle => "one-cycle",
        }
    }

    /// Whether the schedule steps per mini-batch (one-cycle) rather than
    /// per epoch (constant, cosine).
    pub fn per_batch(self) -> bool {
        self == ScheduleName::OneCycle
    }
}

/// The optimiser `name` with learning rate `lr` (SGD with momentum 0.9, the
/// others with PyTorch's defaults).
pub fn make_optimizer(name: OptimizerName, lr: f64) -> Result<Box<dyn Optimizer<f32>>> {
    Ok(match name {
        OptimizerName::Sgd => Box::new(Sgd::new(SgdConfig {
            momentum: 0.9,
            ..SgdConfig::new(lr)
        })?),
        OptimizerName::Adam => Box::new(Adam::new(AdamConfig::new(lr))?),
        OptimizerName::Adamw => Box::new(AdamW::new(AdamWConfig::new(lr))?),
        OptimizerName::Rmsprop => Box::new(RmsProp::new(RmsPropConfig::new(lr))?),
    })
}

/// The schedule `name` from `lr` over `epochs` epochs of
/// `batches_per_epoch` mini-batches (`None` for constant); cosine counts
/// epochs, one-cycle batches ([`ScheduleName::per_batch`]).
pub fn make_schedule(
    name: ScheduleName,
    lr: f64,
    epochs: usize,
    batches_per_epoch: usize,
) -> Result<Option<Box<dyn LrSchedule>>> {
    Ok(match name {
        ScheduleName::Constant => None,
        ScheduleName::Cosine => Some(Box::new(CosineAnnealingLr::new(lr, epochs, 0.0)?)),
        ScheduleName::OneCycle => Some(Box::new(OneCycleLr::new(OneCycleConfig::new(
            lr,
            epochs.saturating_mul(batches_per_epoch),
        ))?)),
    })
}

/// The dropout a model uses when none is given, `None` for models without
/// dropout (the recurrent classifiers).
pub fn model_dropout(model: &str) -> Option<f64> {
    match model {
        "small-cnn" => Some(SmallCnnConfig::default().dropout),
        "source-cnn" => Some(SourceCnnConfig::default().dropout),
        "transformer" => Some(TransformerClassifierConfig::default().dropout),
        _ => None,
    }
}

/// One training run, as the flags of `anneal train` describe it (without
/// `--out`); written to and read from JSON with the same field names.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Model name (see [`MODEL_NAMES`]).
    pub model: String,
    /// Optimiser.
    pub optimizer: OptimizerName,
    /// Learning rate (the peak rate of a schedule).
    pub lr: f64,
    /// Learning-rate schedule over `epochs`.
    pub schedule: ScheduleName,
    /// Epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// L2 penalty λ (`½λ‖w‖²` on weights, not biases or norms).
    pub l2: f64,
    /// Dropout probability; `None` keeps the model's own.
    pub dropout: Option<f64>,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
}

/// A run's model, optimiser and schedule, ready for the trainer.
pub struct Run {
    /// The freshly initialised model.
    pub model: Box<dyn Module<f32>>,
    /// The optimiser at the configured rate.
    pub optimizer: Box<dyn Optimizer<f32>>,
    /// The schedule over the configured epochs, if not constant.
    pub schedule: Option<Box<dyn LrSchedule>>,
}

/// A boxed schedule as the trainer takes it.
pub fn schedule_arg(s: &mut Option<Box<dyn LrSchedule>>) -> Option<&mut dyn LrSchedule> {
    match s {
        Some(s) => Some(&mut **s),
        None => None,
    }
}

impl RunConfig {
    /// What `anneal train --model MODEL` does with no other flag.
    pub fn defaults(model: &str) -> Result<RunConfig> {
        check_model(model)?;
        let (lr, epochs) = defaults_for(model);
        Ok(RunConfig {
            model: model.to_string(),
            optimizer: OptimizerName::Adam,
            lr,
            schedule: ScheduleName::Constant,
            epochs,
            batch_size: 32,
            l2: 0.0,
            dropout: None,
            seed: 0,
        })
    }

    /// Errors naming the field whose value is out of range.
    pub fn validate(&self) -> Result<()> {
        check_model(&self.model)?;
        let bad = |field: &str, why: String| Err(Error::Invalid(format!("{field}: {why}")));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} must be a positive number", self.lr));
        }
        if self.epochs == 0 || self.epochs > 10_000 {
            return bad(
                "epochs",
                format!("{} must be between 1 and 10000", self.epochs),
            );
        }
        if self.batch_size == 0 || self.batch_size > 1_000_000 {
            return bad(
                "batch_size",
                format!("{} must be between 1 and 1000000", self.batch_size),
            );
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return bad("l2", format!("{} must be a non-negative number", self.l2));
        }
        if let Some(p) = self.dropout {
            if !(0.0..1.0).contains(&p) {
                return bad("dropout", format!("{p} must be in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Builds the model, optimiser and schedule for training on
    /// `train_samples` samples.
    pub fn build(&self, train_samples: usize) -> Result<Run> {
        self.validate()?;
        Ok(Run {
            model: build_model(&self.model, self.dropout, self.seed)?,
            optimizer: make_optimizer(self.optimizer, self.lr)?,
            schedule: make_schedule(
                self.schedule,
                self.lr,
                self.epochs,
                train_samples.div_ceil(self.batch_size).max(1),
            )?,
        })
    }

    /// The trainer settings of this run (no progress bar, no checkpoints).
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            l2: self.l2,
            schedule_per_batch: self.schedule.per_batch(),
            ..Default::default()
        }
    }

    /// The configuration as pretty JSON, every field present (`dropout` is
    /// `null` for the model's own); [`TrainFile::parse`] reads it back.
    pub fn to_json(&self) -> String {
        let v = serde_json::json!({
            "model": self.model,
            "optimizer": self.optimizer.name(),
            "lr": self.lr,
            "schedule": self.schedule.name(),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "l2": self.l2,
            "dropout": self.dropout,
            "seed": self.seed,
        });
        // Serialising a JSON value built from strings and numbers cannot fail.
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    }

    /// The run a configuration file describes: its fields over
    /// [`RunConfig::defaults`] of its model (`small-cnn` when absent).
    pub fn from_file(file: &TrainFile) -> Result<RunConfig> {
        let model = file.model.clone().unwrap_or_else(|| "small-cnn".into());
        let d = RunConfig::defaults(&model)?;
        Ok(RunConfig {
            model,
            optimizer: file.optimizer.unwrap_or(d.optimizer),
            lr: file.lr.unwrap_or(d.lr),
            schedule: file.schedule.unwrap_or(d.schedule),
            epochs: file.epochs.unwrap_or(d.epochs),
            batch_size: file.batch_size.unwrap_or(d.batch_size),
            l2: file.l2.unwrap_or(d.l2),
            dropout: file.dropout.unwrap_or(d.dropout),
            seed: file.seed.unwrap_or(d.seed),
        })
    }

    /// One line: `adam lr 3.0e-3 constant l2 0 dropout 0.1`.
    pub fn summary(&self) -> String {
        format!(
            "{} lr {:.1e} {} l2 {} dropout {}",
            self.optimizer.name(),
            self.lr,
            self.schedule.name(),
            fmt_l2(self.l2),
            fmt_dropout(self)
        )
    }
}

fn fmt_l2(l2: f64) -> String {
    if l2 == 0.0 {
        "0".into()
    } else {
        format!("{l2:.1e}")
    }
}

fn fmt_dropout(c: &RunConfig) -> String {
    match c.dropout.or_else(|| model_dropout(&c.model)) {
        Some(p) => format!("{p}"),
        None => "-".into(),
    }
}

fn check_model(name: &str) -> Result<()> {
    if MODEL_NAMES.contains(&name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "unknown model {name:?}; choose one of {}",
            MODEL_NAMES.join(", ")
        )))
    }
}

/// A configuration file for `anneal train --config`: any subset of the
/// train flags, named as in [`RunConfig`] (`batch_size` with an
/// underscore). An absent field is `None`; `"dropout": null` is
/// `Some(None)`, the model's own dropout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainFile {
    /// `model`.
    pub model: Option<String>,
    /// `optimizer`.
    pub optimizer: Option<OptimizerName>,
    /// `lr`.
    pub lr: Option<f64>,
    /// `schedule`.
    pub schedule: Option<ScheduleName>,
    /// `epochs`.
    pub epochs: Option<usize>,
    /// `batch_size`.
    pub batch_size: Option<usize>,
    /// `l2`.
    pub l2: Option<f64>,
    /// `dropout` (`Some(None)` for `null`).
    pub dropout: Option<Option<f64>>,
    /// `seed`.
    pub seed: Option<u64>,
    /// `out`, the output folder.
    pub out: Option<PathBuf>,
}

/// The fields a [`TrainFile`] may have.
pub const TRAIN_FILE_FIELDS: &[&str] = &[
    "model",
    "optimizer",
    "lr",
    "schedule",
    "epochs",
    "batch_size",
    "l2",
    "dropout",
    "seed",
    "out",
];

/// 1-based line of the first `"key"` in `text`, or 1.
fn line_of(text: &str, key: &str) -> usize {
    let quoted = format!("\"{key}\"");
    text.find(&quoted)
        .map_or(1, |at| 1 + text[..at].matches('\n').count())
}

impl TrainFile {
    /// Reads and validates a configuration file; errors name the file, the
    /// line and the field.
    pub fn load(path: &Path) -> Result<TrainFile> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        TrainFile::parse(&text, path)
    }

    /// Parses and validates the JSON `text` of the file `path` (used in the
    /// errors): an object with only [`TRAIN_FILE_FIELDS`], each of the right
    /// type and in range.
    pub fn parse(text: &str, path: &Path) -> Result<TrainFile> {
        let err = |line: usize, message: String| Error::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        let v: Value = serde_json::from_str(text)
            .map_err(|e| err(e.line().max(1), format!("invalid JSON: {e}")))?;
        let Value::Object(map) = v else {
            return Err(err(
                1,
                "expected a JSON object of train settings, e.g. {\"lr\": 0.003}".into(),
            ));
        };
        if let Some(k) = map
            .keys()
            .find(|k| !TRAIN_FILE_FIELDS.contains(&k.as_str()))
        {
            return Err(err(
                line_of(text, k),
                format!(
                    "unknown field \"{k}\"; the fields are {}",
                    TRAIN_FILE_FIELDS.join(", ")
                ),
            ));
        }
        let field = |k: &str, why: String| err(line_of(text, k), format!("field \"{k}\": {why}"));
        let get = |k: &str| map.get(k);
        let string = |k: &str| -> Result<Option<String>> {
            match get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(x) => Err(field(k, format!("expected a string, found {x}"))),
            }
        };
        let number = |k: &str| -> Result<Option<f64>> {
            match get(k) {
                None => Ok(None),
                Some(Value::Number(n)) => n
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| field(k, format!("{n} is not a number"))),
                Some(x) => Err(field(k, format!("expected a number, found {x}"))),
            }
        };
        let integer = |k: &str, lo: u64, hi: u64| -> Result<Option<u64>> {
            match get(k) {
                None => Ok(None),
                Some(x) => match x.as_u64() {
                    Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
                    _ => Err(field(
                        k,
                        format!("expected an integer between {lo} and {hi}, found {x}"),
                    )),
                },
            }
        };
        let model = string("model")?;
        if let Some(m) = &model {
            if !MODEL_NAMES.contains(&m.as_str()) {
                return Err(field(
                    "model",
                    format!(
                        "unknown model {m:?}; choose one of {}",
                        MODEL_NAMES.join(", ")
                    ),
                ));
            }
        }
        let optimizer = match string("optimizer")? {
            None => None,
            Some(s) => Some(
                OptimizerName::ALL
                    .into_iter()
                    .find(|o| o.name() == s)
                    .ok_or_else(|| {
                        field(
                            "optimizer",
                            format!(
                                "unknown optimiser {s:?}; choose one of {}",
                                OptimizerName::ALL.map(|o| o.name()).join(", ")
                            ),
                        )
                    })?,
            ),
        };
        let schedule = match string("schedule")? {
            None => None,
            Some(s) => Some(
                ScheduleName::ALL
                    .into_iter()
                    .find(|o| o.name() == s)
                    .ok_or_else(|| {
                        field(
                            "schedule",
                            format!(
                                "unknown schedule {s:?}; choose one of {}",
                                ScheduleName::ALL.map(|o| o.name()).join(", ")
                            ),
                        )
                    })?,
            ),
        };
        let lr = number("lr")?;
        if let Some(x) = lr {
            if !(x.is_finite() && x > 0.0) {
                return Err(field("lr", format!("{x} must be a positive number")));
            }
        }
        let l2 = number("l2")?;
        if let Some(x) = l2 {
            if !(x.is_finite() && x >= 0.0) {
                return Err(field("l2", format!("{x} must be a non-negative number")));
            }
        }
        let dropout = match get("dropout") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(_) => {
                let p = number("dropout")?.unwrap_or(f64::NAN);
                if !(0.0..1.0).contains(&p) {
                    return Err(field("dropout", format!("{p} must be in [0, 1) or null")));
                }
                Some(Some(p))
            }
        };
        Ok(TrainFile {
            model,
            optimizer,
            lr,
            schedule,
            epochs: integer("epochs", 1, 10_000)?.map(|n| n as usize),
            batch_size: integer("batch_size", 1, 1_000_000)?.map(|n| n as usize),
            l2,
            dropout,
            seed: integer("seed", 0, u64::MAX)?,
            out: string("out")?.map(PathBuf::from),
        })
    }
}

/// One round of successive halving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Configurations trained in this round.
    pub configs: usize,
    /// Epochs each has been trained by the end of the round (cumulative).
    pub epochs: usize,
    /// Configurations kept for the next round (1 after the last).
    pub survivors: usize,
}

/// The rounds of successive halving for `configs` configurations starting
/// at `min_epochs`: `configs` at `min_epochs`, then `⌊configs/2⌋` at twice
/// the epochs, … until one remains (a single configuration gets one round).
/// Errors when either is 0 or the final budget would pass 10 000 epochs.
pub fn halving_rounds(configs: usize, min_epochs: usize) -> Result<Vec<Round>> {
    if configs == 0 || min_epochs == 0 {
        return Err(Error::Invalid(format!(
            "successive halving: {configs} configurations and {min_epochs} minimum epochs must both be positive"
        )));
    }
    let mut rounds = Vec::new();
    let (mut n, mut epochs) = (configs, min_epochs);
    loop {
        if epochs > 10_000 {
            return Err(Error::Invalid(format!(
                "successive halving: {configs} configurations from {min_epochs} epochs would need {epochs} epochs in the last round (at most 10000)"
            )));
        }
        let survivors = (n / 2).max(1);
        rounds.push(Round {
            configs: n,
            epochs,
            survivors,
        });
        if survivors == 1 {
            return Ok(rounds);
        }
        n = survivors;
        epochs *= 2;
    }
}

/// What to search.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneConfig {
    /// Model name (see [`MODEL_NAMES`]).
    pub model: String,
    /// Configurations in the first round.
    pub configs: usize,
    /// Epochs of the first round.
    pub min_epochs: usize,
    /// Mini-batch size of every run.
    pub batch_size: usize,
    /// Seed of the sampling, the validation split ([`digits_tune_split`])
    /// and every run's training.
    pub seed: u64,
    /// Make configuration 0 the CLI defaults ([`RunConfig::defaults`]), so
    /// the baseline always competes.
    pub include_defaults: bool,
}

impl Default for TuneConfig {
    fn default() -> Self {
        TuneConfig {
            model: "small-cnn".into(),
            configs: 8,
            min_epochs: 1,
            batch_size: 32,
            seed: 0,
            include_defaults: true,
        }
    }
}

/// Most configurations one search holds in memory.
pub const MAX_CONFIGS: usize = 256;

impl TuneConfig {
    fn validate(&self) -> Result<Vec<Round>> {
        check_model(&self.model)?;
        if self.configs > MAX_CONFIGS {
            return Err(Error::Invalid(format!(
                "tune: {} configurations (at most {MAX_CONFIGS})",
                self.configs
            )));
        }
        if self.batch_size == 0 || self.batch_size > 1_000_000 {
            return Err(Error::Invalid(format!(
                "tune: batch size {} must be between 1 and 1000000",
                self.batch_size
            )));
        }
        halving_rounds(self.configs, self.min_epochs)
    }

    /// The CLI defaults trained for the search's final budget: the baseline
    /// the winner is compared with.
    pub fn baseline(&self) -> Result<RunConfig> {
        let rounds = self.validate()?;
        Ok(RunConfig {
            epochs: rounds.last().map_or(self.min_epochs, |r| r.epochs),
            batch_size: self.batch_size,
            seed: self.seed,
            ..RunConfig::defaults(&self.model)?
        })
    }
}

/// `x` rounded to two significant digits (as `{:.1e}` prints it).
fn two_digits(x: f64) -> f64 {
    format!("{x:.1e}").parse().unwrap_or(x)
}

/// The configurations the search trains, drawn from a generator seeded by
/// `cfg.seed`: optimiser uniform over [`OptimizerName::ALL`], learning rate
/// log-uniform in [`OptimizerName::lr_range`], schedule uniform over
/// [`ScheduleName::ALL`], L2 0 with probability ½ else log-uniform in
/// [1e-5, 1e-2], dropout uniform over {0, 0.05, …, 0.5} (models with
/// dropout only); rates and penalties rounded to two significant digits.
/// Every one spans the final budget's epochs. When `cfg.include_defaults`,
/// configuration 0 is the CLI defaults and the draws follow it (the same
/// draws, one fewer).
pub fn sample_configs(cfg: &TuneConfig) -> Result<Vec<RunConfig>> {
    let rounds = cfg.validate()?;
    let epochs = rounds.last().map_or(cfg.min_epochs, |r| r.epochs);
    let has_dropout = model_dropout(&cfg.model).is_some();
    let mut rng = rand::rngs::StdRng::seed_from_u64(mix_seed(cfg.seed, 0x7475_6E65));
    let mut out = Vec::with_capacity(cfg.configs);
    if cfg.include_defaults {
        out.push(cfg.baseline()?);
    }
    while out.len() < cfg.configs {
        // Every draw happens for every configuration, so no choice shifts
        // the stream of the ones after it.
        let optimizer = OptimizerName::ALL[rng.random_range(0..OptimizerName::ALL.len())];
        let (lo, hi) = optimizer.lr_range();
        let lr = two_digits(lo * (hi / lo).powf(rng.random::<f64>()));
        let schedule = ScheduleName::ALL[rng.random_range(0..ScheduleName::ALL.len())];
        let l2_on = rng.random_bool(0.5);
        let l2 = two_digits(1e-5 * 1e3f64.powf(rng.random::<f64>()));
        let dropout = rng.random_range(0..=10u32) as f64 / 20.0;
        out.push(RunConfig {
            model: cfg.model.clone(),
            optimizer,
            lr,
            schedule,
            epochs,
            batch_size: cfg.batch_size,
            l2: if l2_on { l2 } else { 0.0 },
            dropout: has_dropout.then_some(dropout),
            seed: cfg.seed,
        });
    }
    Ok(out)
}

/// One epoch of a trial's curve.
#[derive(Debug, Clone, PartialEq)]
pub struct CurvePoint {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (training mode).
    pub train_accuracy: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
}

/// One configuration's fate in the search.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// Position in [`sample_configs`]'s list.
    pub index: usize,
    /// The configuration (its `epochs` is the final budget its schedule spans).
    pub config: RunConfig,
    /// Last round (0-based) it trained in.
    pub round: usize,
    /// Epochs it was trained.
    pub epochs: usize,
    /// Validation accuracy after its last epoch (0 when it diverged).
    pub val_accuracy: f64,
    /// Validation loss after its last epoch (∞ when it diverged).
    pub val_loss: f64,
    /// Why training stopped, when the loss became non-finite.
    pub diverged: Option<String>,
    /// Every epoch it trained.
    pub curve: Vec<CurvePoint>,
}

/// Better first: higher validation accuracy, then lower validation loss,
/// then the lower index; a diverged trial after every other.
fn rank(a: &Trial, b: &Trial) -> std::cmp::Ordering {
    a.diverged
        .is_some()
        .cmp(&b.diverged.is_some())
        .then(b.val_accuracy.total_cmp(&a.val_accuracy))
        .then(a.val_loss.total_cmp(&b.val_loss))
        .then(a.index.cmp(&b.index))
}

/// Reported after each trial of each round.
#[derive(Debug)]
pub struct Progress<'a> {
    /// 0-based round.
    pub round: usize,
    /// Rounds in all.
    pub rounds: usize,
    /// Trials trained so far, this one included (over all rounds).
    pub done: usize,
    /// Trials in all rounds.
    pub total: usize,
    /// The trial just trained.
    pub trial: &'a Trial,
    /// Seconds this round's training of it took.
    pub seconds: f64,
}

/// The outcome of [`tune`].
#[derive(Debug, Clone, PartialEq)]
pub struct TuneResult {
    /// The halving schedule that ran.
    pub rounds: Vec<Round>,
    /// Every trial, best first: by the last round reached, then as each
    /// round ranks (validation accuracy, loss, index).
    pub leaderboard: Vec<Trial>,
    /// The winner's configuration (the first of the leaderboard).
    pub best: RunConfig,
    /// The winner's test loss (the only use of the test split).
    pub test_loss: f64,
    /// The winner's test accuracy.
    pub test_accuracy: f64,
}

/// Training, validation and test data of a search.
#[derive(Debug, Clone)]
pub struct TuneData {
    /// What the trials train on.
    pub train: Dataset,
    /// What ranks them.
    pub val: Dataset,
    /// What the winner is finally scored on.
    pub test: Dataset,
}

/// The bundled digits as `anneal tune` uses them: the test split is
/// `anneal train`'s (stratified 20 %, seed 0); a stratified 20 % of the
/// rest, drawn with `seed`, is the validation split.
pub fn digits_tune_split(seed: u64) -> Result<TuneData> {
    let data = load_digits()?;
    let outer = stratified_split(&data.labels, 0.2, 0)?;
    let rest = data.subset(&outer.train)?;
    let inner = stratified_split(&rest.labels, 0.2, seed)?;
    Ok(TuneData {
        train: rest.subset(&inner.train)?,
        val: rest.subset(&inner.test)?,
        test: data.subset(&outer.test)?,
    })
}

/// Trains `config` from scratch on `train`, evaluating on `eval` each epoch.
pub fn train_run(config: &RunConfig, train_set: &Dataset, eval: &Dataset) -> Result<History> {
    let mut run = config.build(train_set.len())?;
    train(
        &mut *run.model,
        &mut *run.optimizer,
        schedule_arg(&mut run.schedule),
        train_set,
        eval,
        &config.train_config(),
    )
}

/// Runs the search: successive halving over [`sample_configs`] on `train`,
/// ranked on `val`; `test` is evaluated once, for the winner. `progress`
/// hears of every trial as it ends. A trial whose loss becomes non-finite is
/// marked diverged and ranked last; the search fails only if all diverge.
pub fn tune(
    cfg: &TuneConfig,
    train_set: &Dataset,
    val: &Dataset,
    test: &Dataset,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<TuneResult> {
    let rounds = cfg.validate()?;
    if val.is_empty() || test.is_empty() {
        return Err(Error::Invalid(format!(
            "tune: validation ({}) and test ({}) sets must not be empty",
            val.len(),
            test.len()
        )));
    }
    let configs = sample_configs(cfg)?;
    let mut runs: Vec<Option<Run>> = configs
        .iter()
        .map(|c| c.build(train_set.len()).map(Some))
        .collect::<Result<_>>()?;
    let mut trials: Vec<Trial> = configs
        .into_iter()
        .enumerate()
        .map(|(index, config)| Trial {
            index,
            config,
            round: 0,
            epochs: 0,
            val_accuracy: 0.0,
            val_loss: f64::INFINITY,
            diverged: None,
            curve: Vec::new(),
        })
        .collect();
    let total: usize = rounds.iter().map(|r| r.configs).sum();
    let mut done = 0;
    let mut alive: Vec<usize> = (0..trials.len()).collect();
    for (k, round) in rounds.iter().enumerate() {
        for &i in &alive {
            let start = Instant::now();
            let t = &mut trials[i];
            t.round = k;
            if let Some(run) = runs[i].as_mut() {
                let tc = TrainConfig {
                    epochs: round.epochs,
                    ..t.config.train_config()
                };
                match train_epochs(
                    &mut *run.model,
                    &mut *run.optimizer,
                    schedule_arg(&mut run.schedule),
                    train_set,
                    val,
                    &tc,
                    t.epochs,
                ) {
                    Ok(h) => {
                        t.curve.extend(h.epochs.iter().map(|e| CurvePoint {
                            epoch: e.epoch + 1,
                            lr: e.lr,
                            train_loss: e.train_loss,
                            train_accuracy: e.train_accuracy,
                            val_loss: e.eval_loss,
                            val_accuracy: e.eval_accuracy,
                        }));
                        t.epochs = round.epochs;
                        if let Some(last) = t.curve.last() {
                            t.val_accuracy = last.val_accuracy;
                            t.val_loss = last.val_loss;
                        }
                        if !t.val_loss.is_finite() {
                            t.diverged = Some(format!("validation loss {}", t.val_loss));
                        }
                    }
                    Err(e @ Error::NonFinite { .. }) => t.diverged = Some(e.to_string()),
                    Err(e) => return Err(e),
                }
                if t.diverged.is_some() {
                    t.val_accuracy = 0.0;
                    t.val_loss = f64::INFINITY;
                    runs[i] = None;
                }
            }
            done += 1;
            progress(&Progress {
                round: k,
                rounds: rounds.len(),
                done,
                total,
                trial: &trials[i],
                seconds: start.elapsed().as_secs_f64(),
            });
        }
        let mut ranked = alive.clone();
        ranked.sort_by(|&a, &b| rank(&trials[a], &trials[b]));
        ranked.truncate(round.survivors);
        for &i in &alive {
            if !ranked.contains(&i) {
                runs[i] = None;
            }
        }
        ranked.sort_unstable();
        alive = ranked;
    }
    let mut leaderboard = trials;
    leaderboard.sort_by(|a, b| b.round.cmp(&a.round).then(rank(a, b)));
    let winner = &leaderboard[0];
    if let Some(why) = &winner.diverged {
        return Err(Error::Invalid(format!(
            "tune: every configuration diverged (the best: {}: {why})",
            winner.config.summary()
        )));
    }
    let run = runs[winner.index]
        .as_ref()
        .ok_or_else(|| Error::Invalid("tune: the winner's model was dropped".into()))?;
    let (test_loss, test_accuracy) = evaluate(&*run.model, test, 256)?;
    Ok(TuneResult {
        rounds,
        best: winner.config.clone(),
        leaderboard,
        test_loss,
        test_accuracy,
    })
}

impl TuneResult {
    /// The leaderboard as a Markdown table.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| rank | # | optimiser | lr | schedule | l2 | dropout | epochs | val acc | val loss |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for (r, t) in self.leaderboard.iter().enumerate() {
            let c = &t.config;
            let (acc, loss) = match t.diverged {
                Some(_) => ("diverged".to_string(), "-".to_string()),
                None => (
                    format!("{:.2}%", t.val_accuracy * 100.0),
                    format!("{:.4}", t.val_loss),
                ),
            };
            s += &format!(
                "| {} | {} | {} | {:.1e} | {} | {} | {} | {} | {acc} | {loss} |\n",
                r + 1,
                t.index,
                c.optimizer.name(),
                c.lr,
                c.schedule.name(),
                fmt_l2(c.l2),
                fmt_dropout(c),
                t.epochs,
            );
        }
        s
    }

    /// The trials of the last round.
    pub fn finalists(&self) -> impl Iterator<Item = &Trial> {
        let last = self.rounds.len().saturating_sub(1);
        self.leaderboard.iter().filter(move |t| t.round == last)
    }

    /// Writes the finalists' validation loss and accuracy per epoch to
    /// `stem.svg` and `stem.png`.
    pub fn write_curves(&self, stem: &Path) -> Result<()> {
        let series = |f: &dyn Fn(&CurvePoint) -> f64| -> Vec<Series> {
            self.finalists()
                .map(|t| Series {
                    label: format!(
                        "#{} {} {}",
                        t.index,
                        t.config.optimizer.name(),
                        t.config.schedule.name()
                    ),
                    points: t.curve.iter().map(|p| (p.epoch as f64, f(p))).collect(),
                })
                .collect()
        };
        write_curves(
            stem,
            &[
                Panel {
                    title: "validation loss".into(),
                    y_label: "cross-entropy".into(),
                    series: series(&|p| p.val_loss),
                },
                Panel {
                    title: "validation accuracy".into(),
                    y_label: "%".into(),
                    series: series(&|p| p.val_accuracy * 100.0),
                },
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halving_schedule() {
        let r = |configs, epochs, survivors| Round {
            configs,
            epochs,
            survivors,
        };
        assert_eq!(
            halving_rounds(8, 1).unwrap(),
            vec![r(8, 1, 4), r(4, 2, 2), r(2, 4, 1)]
        );
        assert_eq!(
            halving_rounds(16, 3).unwrap(),
            vec![r(16, 3, 8), r(8, 6, 4), r(4, 12, 2), r(2, 24, 1)]
        );
        // Odd counts keep the lower half.
        assert_eq!(halving_rounds(5, 2).unwrap(), vec![r(5, 2, 2), r(2, 4, 1)]);
        assert_eq!(halving_rounds(3, 1).unwrap(), vec![r(3, 1, 1)]);
        assert_eq!(halving_rounds(1, 4).unwrap(), vec![r(1, 4, 1)]);
        assert!(halving_rounds(0, 1).is_err());
        assert!(halving_rounds(4, 0).is_err());
        // 256 configurations from 100 epochs would end at 12 800.
        let e = halving_rounds(256, 100).unwrap_err().to_string();
        assert!(e.contains("12800"), "{e}");
        assert_eq!(halving_rounds(256, 1).unwrap().len(), 8);
    }

    #[test]
    fn sampling_is_seeded_and_in_range() {
        let cfg = TuneConfig {
            configs: 64,
            ..Default::default()
        };
        let a = sample_configs(&cfg).unwrap();
        assert_eq!(a, sample_configs(&cfg).unwrap());
        assert_eq!(a[0], cfg.baseline().unwrap());
        assert_eq!(a[0].epochs, 32);
        let b = sample_configs(&TuneConfig {
            include_defaults: false,
            ..cfg.clone()
        })
        .unwrap();
        assert_ne!(a[0], b[0]);
        assert_eq!(
            a[1..],
            b[..63],
            "the defaults go first, then the same draws"
        );
        assert_ne!(a, sample_configs(&TuneConfig { seed: 1, ..cfg }).unwrap());
        for c in &b {
            let (lo, hi) = c.optimizer.lr_range();
            assert!((lo * 0.95..=hi * 1.05).contains(&c.lr), "{c:?}");
            assert!(c.l2 == 0.0 || (0.95e-5..=1.05e-2).contains(&c.l2), "{c:?}");
            let p = c.dropout.unwrap();
            assert!(
                (0.0..=0.5).contains(&p) && (p * 20.0).fract() == 0.0,
                "{c:?}"
            );
            assert_eq!((c.epochs, c.batch_size, c.seed), (32, 32, 0));
            c.validate().unwrap();
        }
        // 64 draws reach every optimiser and schedule.
        for o in OptimizerName::ALL {
            assert!(b.iter().any(|c| c.optimizer == o), "{o:?}");
        }
        for s in ScheduleName::ALL {
            assert!(b.iter().any(|c| c.schedule == s), "{s:?}");
        }
        let lstm = sample_configs(&TuneConfig {
            model: "lstm".into(),
            configs: 4,
            ..Default::default()
        })
        .unwrap();
        assert!(lstm.iter().all(|c| c.dropout.is_none()));
    }

    #[test]
    fn ranking_is_accuracy_then_loss_then_index() {
        let t = |index, acc, loss, diverged: bool| Trial {
            index,
            config: RunConfig::defaults("small-cnn").unwrap(),
            round: 0,
            epochs: 1,
            val_accuracy: acc,
            val_loss: loss,
            diverged: diverged.then(|| "non-finite loss".to_string()),
            curve: Vec::new(),
        };
        let mut v = [
            t(0, 0.0, f64::INFINITY, true),
            t(1, 0.9, 0.5, false),
            t(2, 0.95, 0.7, false),
            t(3, 0.9, 0.4, false),
            t(4, 0.9, 0.4, false),
        ];
        v.sort_by(rank);
        let order: Vec<usize> = v.iter().map(|t| t.index).collect();
        assert_eq!(order, [2, 3, 4, 1, 0]);
    }

    #[test]
    fn schedules_follow_pytorch() {
        let make = |name, epochs, batches| make_schedule(name, 0.1, epochs, batches).unwrap();
        assert!(make(ScheduleName::Constant, 4, 10).is_none());
        // CosineAnnealingLR(T_max = epochs): 0.1·(1 + cos(π·t/4))/2 per epoch.
        let c = make(ScheduleName::Cosine, 4, 10).unwrap();
        assert_eq!(c.lr_at(0), 0.1);
        assert!((c.lr_at(2) - 0.05).abs() < 1e-12);
        // OneCycleLR(max_lr = 0.1, total_steps = 4·25 = 100): from 0.1/25 at
        // step 0 to 0.1 at step 0.3·100 − 1 = 29, down to 0.1/25/1e4 at 99.
        let o = make(ScheduleName::OneCycle, 4, 25).unwrap();
        assert!((o.lr_at(0) - 0.004).abs() < 1e-15);
        assert!((o.lr_at(29) - 0.1).abs() < 1e-15);
        assert!((o.lr_at(99) - 4e-7).abs() < 1e-18);
        assert!(ScheduleName::OneCycle.per_batch() && !ScheduleName::Cosine.per_batch());
        let cfg = RunConfig {
            schedule: ScheduleName::OneCycle,
            ..RunConfig::defaults("small-cnn").unwrap()
        };
        assert!(cfg.train_config().schedule_per_batch);
        assert!(
            !RunConfig::defaults("small-cnn")
                .unwrap()
                .train_config()
                .schedule_per_batch
        );
    }

    #[test]
    fn json_round_trip_and_errors() {
        let p = Path::new("best.json");
        let c = RunConfig {
            model: "small-cnn".into(),
            optimizer: OptimizerName::Rmsprop,
            lr: 3.4e-4,
            schedule: ScheduleName::OneCycle,
            epochs: 4,
            batch_size: 16,
            l2: 2.2e-5,
            dropout: Some(0.35),
            seed: 7,
        };
        let f = TrainFile::parse(&c.to_json(), p).unwrap();
        assert_eq!(RunConfig::from_file(&f).unwrap(), c);
        let none = RunConfig {
            dropout: None,
            ..c.clone()
        };
        assert_eq!(
            RunConfig::from_file(&TrainFile::parse(&none.to_json(), p).unwrap()).unwrap(),
            none
        );
        // Absent fields are the CLI defaults.
        let partial = TrainFile::parse("{\"lr\": 0.01}", p).unwrap();
        assert_eq!(
            RunConfig::from_file(&partial).unwrap(),
            RunConfig {
                lr: 0.01,
                ..RunConfig::defaults("small-cnn").unwrap()
            }
        );
        let cases: &[(&str, &str)] = &[
            ("{\"lr\": 0.01,", "best.json:1: invalid JSON"),
            ("[1, 2]", "expected a JSON object"),
            (
                "{\n  \"lr\": 0.01,\n  \"learning_rate\": 1\n}",
                "best.json:3: unknown field \"learning_rate\"",
            ),
            ("{\"lr\": \"fast\"}", "field \"lr\": expected a number"),
            ("{\"lr\": -1}", "field \"lr\": -1 must be a positive number"),
            (
                "{\"epochs\": 0}",
                "field \"epochs\": expected an integer between 1 and 10000",
            ),
            ("{\"epochs\": 2.5}", "field \"epochs\""),
            ("{\"batch_size\": -3}", "field \"batch_size\""),
            ("{\"l2\": -0.1}", "field \"l2\""),
            ("{\"dropout\": 1}", "field \"dropout\": 1 must be in [0, 1)"),
            (
                "{\"dropout\": \"x\"}",
                "field \"dropout\": expected a number",
            ),
            (
                "{\"optimizer\": \"lbfgs\"}",
                "field \"optimizer\": unknown optimiser \"lbfgs\"",
            ),
            (
                "{\"schedule\": \"step\"}",
                "field \"schedule\": unknown schedule",
            ),
            ("{\"model\": \"resnet\"}", "field \"model\": unknown model"),
            ("{\"seed\": -1}", "field \"seed\""),
            ("{\"out\": 3}", "field \"out\": expected a string"),
        ];
        for (text, needle) in cases {
            let e = TrainFile::parse(text, p).unwrap_err().to_string();
            assert!(
                e.starts_with("best.json:") && e.contains(needle),
                "{text}: {e}"
            );
        }
    }
}
