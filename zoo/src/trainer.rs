//! The training loop: seeded shuffling, mini-batches, any optimiser and
//! schedule, penalties and clipping, per-epoch metrics, early stopping,
//! best-checkpoint saving and bit-exact resumption.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anneal_autograd::{no_grad, Var};
use anneal_layers::{cross_entropy, mix_seed, CrossEntropyOptions, Module, ModuleExt, Reduction};
use anneal_optim::{
    clip_grad_norm, l1_penalty, l2_penalty, LrSchedule, Optimizer, OptimizerState, ParamFilter,
};
use anneal_tensor::Tensor;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::data::Dataset;
use crate::{Error, Result};

/// What the trainer does; every field has a sensible default.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Samples per mini-batch.
    pub batch_size: usize,
    /// Seed of the shuffling and of the dropout masks.
    pub seed: u64,
    /// Cross-entropy label smoothing ε.
    pub label_smoothing: f64,
    /// L1 penalty λ on weights (biases and norms excluded).
    pub l1: f64,
    /// L2 penalty λ (`½λ‖w‖²`) on weights (biases and norms excluded).
    pub l2: f64,
    /// Clip the global gradient norm to this value.
    pub clip_grad_norm: Option<f64>,
    /// Stop after this many epochs without a better evaluation loss.
    pub early_stopping_patience: Option<usize>,
    /// Skip a batch whose loss or gradient is not finite instead of failing
    /// (weights that an update makes non-finite are always an error).
    pub skip_nonfinite: bool,
    /// Show a progress bar (only drawn when standard error is a terminal).
    pub progress: bool,
    /// Where to keep the best checkpoint (lowest evaluation loss).
    pub checkpoint_dir: Option<PathBuf>,
    /// Step the schedule before every mini-batch (step `t` is the run's
    /// `t`-th batch, as one-cycle expects) instead of before every epoch.
    pub schedule_per_batch: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            batch_size: 32,
            seed: 0,
            label_smoothing: 0.0,
            l1: 0.0,
            l2: 0.0,
            clip_grad_norm: None,
            early_stopping_patience: None,
            skip_nonfinite: false,
            progress: false,
            checkpoint_dir: None,
            schedule_per_batch: false,
        }
    }
}

impl TrainConfig {
    /// Errors unless label smoothing is in `[0, 1]` and the penalties and
    /// the clipping norm are finite and non-negative (a NaN would otherwise
    /// switch a penalty off silently).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64, range: &str| {
            Err(Error::Invalid(format!("train: {what} {v} must be {range}")))
        };
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", self.label_smoothing, "in [0, 1]");
        }
        for (what, v) in [("l1", self.l1), ("l2", self.l2)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(what, v, "finite and >= 0");
            }
        }
        if let Some(c) = self
            .clip_grad_norm
            .filter(|c| !(c.is_finite() && *c >= 0.0))
        {
            return bad("clip_grad_norm", c, "finite and >= 0");
        }
        Ok(())
    }
}

/// Metrics of one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Mean training loss (without penalties) over the epoch's batches.
    pub train_loss: f64,
    /// Training accuracy measured on the fly (training mode).
    pub train_accuracy: f64,
    /// Evaluation loss on the held-out data.
    pub eval_loss: f64,
    /// Evaluation accuracy on the held-out data.
    pub eval_accuracy: f64,
    /// Learning rate used in this epoch (its first batch's when the
    /// schedule steps per batch).
    pub lr: f64,
    /// Training throughput, samples per second.
    pub samples_per_second: f64,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// One record per completed epoch.
    pub epochs: Vec<EpochRecord>,
    /// Epoch with the lowest evaluation loss.
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Batches skipped because their loss was not finite.
    pub skipped_batches: usize,
}

/// Mean cross-entropy and accuracy of `model` (inference mode) on `data`.
pub fn evaluate<M: Module<f32> + ?Sized>(
    model: &M,
    data: &Dataset,
    batch_size: usize,
) -> Result<(f64, f64)> {
    if data.is_empty() {
        return Err(Error::Invalid("evaluate: the data set is empty".into()));
    }
    let bs = batch_size.max(1);
    let idx: Vec<usize> = (0..data.len()).collect();
    let (mut loss_sum, mut correct) = (0.0f64, 0usize);
    no_grad(|| -> Result<()> {
        for chunk in idx.chunks(bs) {
            let x = Var::constant(data.inputs.index_select(0, chunk)?);
            let y: Vec<usize> = chunk.iter().map(|&i| data.labels[i]).collect();
            let logits = model.forward(&x)?;
            let targets = Tensor::from_vec(y.clone(), &[y.len()])?;
            let l = cross_entropy(
                &logits,
                &targets,
                &CrossEntropyOptions {
                    reduction: Reduction::Sum,
                    ..Default::default()
                },
            )?;
            loss_sum += l.value().item()? as f64;
            correct += count_correct(logits.value(), &y)?;
        }
        Ok(())
    })?;
    Ok((
        loss_sum / data.len() as f64,
        correct as f64 / data.len() as f64,
    ))
}

fn count_correct(logits: &Tensor<f32>, labels: &[usize]) -> Result<usize> {
    let pred = logits.argmax(-1, false)?;
    Ok(pred
        .as_slice()
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count())
}

/// The first named tensor holding a NaN or ±∞: its name, how many of its
/// values are not finite, and its size.
fn first_non_finite<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor<f32>)>,
) -> Option<(&'a str, usize, usize)> {
    tensors.into_iter().find_map(|(name, t)| {
        let bad = t.as_slice().iter().filter(|v| !v.is_finite()).count();
        (bad > 0).then_some((name, bad, t.numel()))
    })
}

/// The indices of epoch `epoch`'s shuffled order: a pure function of the
/// run's seed and the epoch, so resuming needs no generator state.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rand::rngs::StdRng::seed_from_u64(mix_seed(
        seed,
        epoch as u64,
    )));
    idx
}

/// Trainer state saved in a checkpoint beside the model and optimiser.
#[derive(Debug, Clone, PartialEq)]
struct TrainerState {
    next_epoch: usize,
    best_loss: f64,
    best_epoch: Option<usize>,
    bad_epochs: usize,
}

/// 64-bit FNV-1a of `bytes`: cheap, dependency-free, and plenty to tell two
/// checkpoint files apart (it guards against mixing, not against attack).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Length and FNV-1a hash of one file of a checkpoint set, as recorded in
/// its trainer JSON.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Fingerprint {
    bytes: u64,
    fnv1a64: u64,
}

impl Fingerprint {
    fn of(bytes: &[u8]) -> Self {
        Fingerprint {
            bytes: bytes.len() as u64,
            fnv1a64: fnv1a64(bytes),
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "bytes": self.bytes,
            "fnv1a64": format!("{:016x}", self.fnv1a64),
        })
    }

    fn from_json(v: &serde_json::Value) -> Option<Self> {
        let hash = v.get("fnv1a64")?.as_str()?;
        if hash.len() != 16 {
            return None;
        }
        Some(Fingerprint {
            bytes: v.get("bytes")?.as_u64()?,
            fnv1a64: u64::from_str_radix(hash, 16).ok()?,
        })
    }
}

/// The three files of checkpoint `tag`.
fn checkpoint_files(tag: &str) -> [String; 3] {
    [
        format!("{tag}.model.safetensors"),
        format!("{tag}.optimizer.safetensors"),
        format!("{tag}.trainer.json"),
    ]
}

/// Whether `name` is a temporary file that [`anneal_layers::write_atomically`]
/// leaves behind when a save of one of `files` is killed: exactly
/// `.{file}.tmp-{pid}-{n}`, and not from this process (whose temporaries
/// are removed on every error and panic, so one of its own may belong to a
/// save in progress on another thread).
fn is_stale_temp(name: &str, files: &[String]) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    files.iter().any(|file| {
        let Some(suffix) = rest
            .strip_prefix(file.as_str())
            .and_then(|r| r.strip_prefix(".tmp-"))
        else {
            return false;
        };
        let Some((pid, n)) = suffix.split_once('-') else {
            return false;
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(pid) && digits(n) && pid != std::process::id().to_string()
    })
}

/// Removes temporaries that killed saves of checkpoint `tag` left in `dir`
/// (see [`is_stale_temp`]); best effort, nothing else is touched.
fn remove_stale_temps(dir: &Path, tag: &str) {
    let files = checkpoint_files(tag);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        if is_file
            && entry
                .file_name()
                .to_str()
                .is_some_and(|n| is_stale_temp(n, &files))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes checkpoint `tag` as a consistent set: the model and the optimiser
/// state first (each atomically), then the trainer JSON, which records the
/// length and FNV-1a hash of the bytes just written to the other two. A crash
/// between the writes leaves a JSON that does not match the newer file, which
/// [`resume`] refuses instead of continuing from a mixed checkpoint.
fn save_checkpoint<M: Module<f32> + ?Sized, O: Optimizer<f32> + ?Sized>(
    dir: &Path,
    tag: &str,
    model: &M,
    opt: &O,
    st: &TrainerState,
) -> Result<()> {
    let [model_file, opt_file, json_file] = checkpoint_files(tag);
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        anneal_layers::write_atomically(&path, bytes).map_err(|source| Error::Io { path, source })
    };
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    remove_stale_temps(dir, tag);
    let model_bytes = anneal_layers::to_safetensors_bytes(model)?;
    let opt_bytes = opt.state_dict().to_bytes()?;
    write(&model_file, &model_bytes)?;
    write(&opt_file, &opt_bytes)?;
    let json = serde_json::json!({
        "next_epoch": st.next_epoch,
        "best_loss": st.best_loss,
        "best_epoch": st.best_epoch,
        "bad_epochs": st.bad_epochs,
        "model": Fingerprint::of(&model_bytes).to_json(),
        "optimizer": Fingerprint::of(&opt_bytes).to_json(),
    });
    write(&json_file, json.to_string().as_bytes())
}

/// A checkpoint's trainer JSON: the trainer state and the fingerprints of
/// the model and optimiser files it was saved with.
struct SavedTrainer {
    state: TrainerState,
    model: Fingerprint,
    optimizer: Fingerprint,
}

fn load_trainer_state(path: &Path) -> Result<SavedTrainer> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |m: &str| Error::Parse {
        path: path.to_path_buf(),
        line: 1,
        message: m.to_string(),
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    let get_u = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
    let state = TrainerState {
        next_epoch: get_u("next_epoch").ok_or_else(|| bad("missing next_epoch"))?,
        best_loss: v
            .get("best_loss")
            .and_then(|x| x.as_f64())
            .unwrap_or(f64::INFINITY),
        best_epoch: get_u("best_epoch"),
        bad_epochs: get_u("bad_epochs").unwrap_or(0),
    };
    let fingerprint = |k: &str| match v.get(k) {
        None => Err(bad(&format!(
            "no `{k}` fingerprint: written before checkpoints were saved as a verified set, \
             so its model and optimiser files cannot be checked to belong to it; load them \
             yourself (load_safetensors, OptimizerState::load) and continue with train_epochs"
        ))),
        Some(f) => Fingerprint::from_json(f).ok_or_else(|| {
            bad(&format!(
                "`{k}` must be {{\"bytes\": <length>, \"fnv1a64\": \"<16 hex digits>\"}}"
            ))
        }),
    };
    Ok(SavedTrainer {
        state,
        model: fingerprint("model")?,
        optimizer: fingerprint("optimizer")?,
    })
}

/// Reads checkpoint `tag` from `dir` and checks that its model and optimiser
/// files are the ones its trainer JSON was saved with. Touches nothing.
fn read_checkpoint(dir: &Path, tag: &str) -> Result<(SavedTrainer, Vec<u8>, Vec<u8>)> {
    let [model_file, opt_file, json_file] = checkpoint_files(tag);
    let saved = load_trainer_state(&dir.join(&json_file))?;
    let read = |name: &str, want: Fingerprint| {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path, source })?;
        if Fingerprint::of(&bytes) != want {
            return Err(Error::Invalid(format!(
                "checkpoint {tag} in {}: {name} is not the one {json_file} (saved after {} \
                 epochs) was saved with (written by another epoch or a crash mid-save)",
                dir.display(),
                saved.state.next_epoch,
            )));
        }
        Ok(bytes)
    };
    let model_bytes = read(&model_file, saved.model)?;
    let opt_bytes = read(&opt_file, saved.optimizer)?;
    Ok((saved, model_bytes, opt_bytes))
}

/// Trains `model` on `train`, evaluating on `eval` after every epoch.
///
/// Each epoch re-seeds the model's dropout generators and shuffles from
/// `mix_seed(seed, epoch)`, so the same seed gives bit-identical weights and
/// a run resumed with [`resume`] from a checkpoint ends exactly as an
/// uninterrupted one.
///
/// A NaN or ±∞ loss, gradient, or weight after an update stops the run with
/// [`Error::NonFinite`] naming the global step (0-based batch count) and the
/// parameter (or skips the batch, for the loss and gradients, with
/// `skip_nonfinite`).
pub fn train<M, O>(
    model: &mut M,
    opt: &mut O,
    schedule: Option<&mut dyn LrSchedule>,
    train: &Dataset,
    eval: &Dataset,
    cfg: &TrainConfig,
) -> Result<History>
where
    M: Module<f32> + ?Sized,
    O: Optimizer<f32> + ?Sized,
{
    let st = TrainerState {
        next_epoch: 0,
        best_loss: f64::INFINITY,
        best_epoch: None,
        bad_epochs: 0,
    };
    run(model, opt, schedule, train, eval, cfg, st)
}

/// Trains epochs `start_epoch..cfg.epochs` of a run whose model, optimiser
/// and schedule are still in memory after its first `start_epoch` epochs
/// (successive halving continues its survivors this way).
///
/// Shuffling, dropout masks and the schedule depend only on the seed and the
/// epoch, so the weights end bit-identical to one uninterrupted [`train`]
/// call with `cfg.epochs` epochs. The returned history, early stopping and
/// the best checkpoint see only this call's epochs. Errors when
/// `start_epoch > cfg.epochs`.
pub fn train_epochs<M, O>(
    model: &mut M,
    opt: &mut O,
    schedule: Option<&mut dyn LrSchedule>,
    train: &Dataset,
    eval: &Dataset,
    cfg: &TrainConfig,
    start_epoch: usize,
) -> Result<History>
where
    M: Module<f32> + ?Sized,
    O: Optimizer<f32> + ?Sized,
{
    if start_epoch > cfg.epochs {
        return Err(Error::Invalid(format!(
            "train_epochs: start epoch {start_epoch} is past the run's {} epochs",
            cfg.epochs
        )));
    }
    let st = TrainerState {
        next_epoch: start_epoch,
        best_loss: f64::INFINITY,
        best_epoch: None,
        bad_epochs: 0,
    };
    run(model, opt, schedule, train, eval, cfg, st)
}

/// Continues a run from the checkpoint `tag` (`"last"` or `"best"`) in
/// `cfg.checkpoint_dir`: restores the model, the optimiser state, the
/// schedule position and the early-stopping counters, then trains the
/// remaining epochs.
///
/// The checkpoint's `{tag}.trainer.json` records the length and FNV-1a hash
/// of the `{tag}.model.safetensors` and `{tag}.optimizer.safetensors` it was
/// saved with; both are checked before anything is loaded, so files from
/// different epochs (a crash between the writes of a save) are an error
/// naming the file, never a silently mixed resume. A trainer JSON from
/// before these fingerprints is refused with an error saying so. When the
/// checkpoint or the configuration is refused, the model and the optimiser
/// are left as they were.
pub fn resume<M, O>(
    model: &mut M,
    opt: &mut O,
    schedule: Option<&mut dyn LrSchedule>,
    train: &Dataset,
    eval: &Dataset,
    cfg: &TrainConfig,
    tag: &str,
) -> Result<History>
where
    M: Module<f32> + ?Sized,
    O: Optimizer<f32> + ?Sized,
{
    let dir = cfg
        .checkpoint_dir
        .as_ref()
        .ok_or_else(|| Error::Invalid("resume needs checkpoint_dir".into()))?;
    check_run(train, cfg)?;
    let (saved, model_bytes, opt_bytes) = read_checkpoint(dir, tag)?;
    let opt_path = dir.join(format!("{tag}.optimizer.safetensors"));
    let opt_state = OptimizerState::from_bytes(&opt_bytes).map_err(|e| match e {
        anneal_tensor::Error::InvalidArgument { op, message } => {
            anneal_tensor::Error::InvalidArgument {
                op,
                message: format!("{}: {message}", opt_path.display()),
            }
        }
        e => e,
    })?;
    // Both loads change nothing when they fail; the optimiser goes first and
    // is put back if the model then refuses its file, so a failed resume
    // leaves the model and the optimiser as they were.
    let previous = opt.state_dict();
    opt.load_state_dict(&opt_state)?;
    let model_path = dir.join(format!("{tag}.model.safetensors"));
    if let Err(e) = anneal_layers::load_safetensors_bytes(
        model,
        &model_bytes,
        true,
        &model_path.display().to_string(),
    ) {
        opt.load_state_dict(&previous)?;
        return Err(e.into());
    }
    run(model, opt, schedule, train, eval, cfg, saved.state)
}

/// The checks `run` makes before it changes anything.
fn check_run(train: &Dataset, cfg: &TrainConfig) -> Result<()> {
    if train.is_empty() || cfg.batch_size == 0 {
        return Err(Error::Invalid(format!(
            "train: {} samples and batch size {} must both be positive",
            train.len(),
            cfg.batch_size
        )));
    }
    cfg.validate()
}

fn run<M, O>(
    model: &mut M,
    opt: &mut O,
    mut schedule: Option<&mut dyn LrSchedule>,
    train: &Dataset,
    eval: &Dataset,
    cfg: &TrainConfig,
    mut st: TrainerState,
) -> Result<History>
where
    M: Module<f32> + ?Sized,
    O: Optimizer<f32> + ?Sized,
{
    check_run(train, cfg)?;
    let mut history = History {
        best_epoch: st.best_epoch,
        ..Default::default()
    };
    let filter = ParamFilter::no_bias_or_norm();
    let batches_per_epoch = train.len().div_ceil(cfg.batch_size);
    let bar = if cfg.progress {
        let b = ProgressBar::with_draw_target(
            Some((cfg.epochs.saturating_sub(st.next_epoch) * batches_per_epoch) as u64),
            ProgressDrawTarget::stderr(),
        );
        b.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} batches  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    for epoch in st.next_epoch..cfg.epochs {
        if let Some(s) = schedule.as_deref_mut() {
            s.set_step(if cfg.schedule_per_batch {
                epoch * batches_per_epoch
            } else {
                epoch
            });
            opt.set_learning_rate(s.lr());
        }
        let lr = opt.learning_rate();
        model.reseed(mix_seed(cfg.seed ^ 0xD20F, epoch as u64));
        let order = epoch_order(train.len(), cfg.seed, epoch);
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let step = epoch * batches_per_epoch + b;
            if let (true, Some(s)) = (cfg.schedule_per_batch, schedule.as_deref_mut()) {
                s.set_step(step);
                opt.set_learning_rate(s.lr());
            }
            let x = Var::constant(train.inputs.index_select(0, chunk)?);
            let y: Vec<usize> = chunk.iter().map(|&i| train.labels[i]).collect();
            let targets = Tensor::from_vec(y.clone(), &[y.len()])?;
            let logits = model.forward_train(&x)?;
            let data_loss = cross_entropy(
                &logits,
                &targets,
                &CrossEntropyOptions {
                    label_smoothing: cfg.label_smoothing,
                    ..Default::default()
                },
            )?;
            let lv = data_loss.value().item()? as f64;
            if !lv.is_finite() {
                if cfg.skip_nonfinite {
                    history.skipped_batches += 1;
                    continue;
                }
                return Err(Error::NonFinite {
                    step,
                    what: format!("loss ({lv})"),
                });
            }
            let mut loss = data_loss;
            if cfg.l2 > 0.0 || cfg.l1 > 0.0 {
                let named = model.named_parameters();
                if cfg.l2 > 0.0 {
                    loss = loss.add(&l2_penalty(
                        named.iter().map(|(n, p)| (n.as_str(), *p)),
                        cfg.l2,
                        &filter,
                    )?)?;
                }
                if cfg.l1 > 0.0 {
                    loss = loss.add(&l1_penalty(
                        named.iter().map(|(n, p)| (n.as_str(), *p)),
                        cfg.l1,
                        &filter,
                    )?)?;
                }
            }
            let mut grads = loss.backward()?;
            // A finite loss can still have a non-finite gradient (an overflow
            // inside backward): name the step and the parameter.
            let named = model.named_parameters();
            if let Some((name, bad, n)) = first_non_finite(
                named
                    .iter()
                    .filter_map(|(name, p)| Some((name.as_str(), grads.get(p)?))),
            ) {
                if cfg.skip_nonfinite {
                    history.skipped_batches += 1;
                    continue;
                }
                return Err(Error::NonFinite {
                    step,
                    what: format!("gradient of parameter {name} ({bad} of {n} values)"),
                });
            }
            if let Some(max) = cfg.clip_grad_norm {
                let ids: Vec<_> = named.iter().map(|(_, p)| p.id()).collect();
                clip_grad_norm(&mut grads, &ids, max, 2.0).map_err(|e| Error::NonFinite {
                    step,
                    what: format!("gradient norm ({e})"),
                })?;
            }
            let mut params = model.parameters_mut();
            opt.step(&mut params, &grads)?;
            // An update can overflow finite weights (too large a learning
            // rate): stop at the step that did it, naming the parameter.
            let named = model.named_parameters();
            if let Some((name, bad, n)) =
                first_non_finite(named.iter().map(|(name, p)| (name.as_str(), p.value())))
            {
                return Err(Error::NonFinite {
                    step,
                    what: format!("parameter {name} after the update ({bad} of {n} values)"),
                });
            }
            loss_sum += lv * y.len() as f64;
            correct += count_correct(logits.value(), &y)?;
            seen += y.len();
            bar.inc(1);
            bar.set_message(format!(
                "epoch {}/{}  loss {:.4}  {:.0} samples/s",
                epoch + 1,
                cfg.epochs,
                loss_sum / seen as f64,
                seen as f64 / start.elapsed().as_secs_f64().max(1e-9)
            ));
        }
        let seconds = start.elapsed().as_secs_f64();
        let (eval_loss, eval_accuracy) = evaluate(model, eval, cfg.batch_size.max(256))?;
        history.epochs.push(EpochRecord {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            eval_loss,
            eval_accuracy,
            lr,
            samples_per_second: seen as f64 / seconds.max(1e-9),
        });
        let improved = eval_loss < st.best_loss;
        if improved {
            st.best_loss = eval_loss;
            st.best_epoch = Some(epoch);
            history.best_epoch = Some(epoch);
        }
        st.next_epoch = epoch + 1;
        // Early stopping as Keras/Lightning's EarlyStopping(min_delta = 0):
        // stop after `patience` epochs without a lower evaluation loss, or on
        // a non-finite one. The counter lives in the checkpointed trainer
        // state, so a resumed run stops at the same epoch.
        st.bad_epochs = if improved { 0 } else { st.bad_epochs + 1 };
        let stop = cfg
            .early_stopping_patience
            .is_some_and(|p| st.bad_epochs >= p || !eval_loss.is_finite());
        if let Some(dir) = &cfg.checkpoint_dir {
            if improved {
                save_checkpoint(dir, "best", model, opt, &st)?;
            }
            save_checkpoint(dir, "last", model, opt, &st)?;
        }
        if stop {
            history.stopped_early = true;
            break;
        }
    }
    bar.finish_and_clear();
    Ok(history)
}
