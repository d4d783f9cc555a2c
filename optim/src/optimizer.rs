//! The [`Optimizer`] trait, parameter groups, and the bookkeeping every
//! update rule shares (state slots keyed by parameter, the group of each
//! parameter, the chunked element-wise loop).

use std::collections::{BTreeMap, HashMap};

use anneal_autograd::{Gradients, Param, ParamId};
use anneal_tensor::{Element, Error, Result, Tensor};
use rayon::prelude::*;

use crate::state::{GroupState, OptimizerState, ParamState};

/// An optimisation algorithm: updates parameters in place from their
/// gradients (PyTorch's `torch.optim.Optimizer`).
///
/// # Parameters, state and their order
///
/// `step` takes every trainable parameter, in a fixed order, and the
/// [`Gradients`] of the loss. A parameter that has no gradient in `grads` is
/// left untouched, its state (moments, step count) included — as PyTorch
/// skips a parameter whose `.grad` is `None`.
///
/// In memory, state is keyed by [`ParamId`]. Because ids are process-local,
/// the optimiser also numbers parameters in the order it first sees them in
/// `step` (with the same slice every step, that number is the position in
/// the slice) and [`Optimizer::state_dict`] keys the saved state by that
/// number. To resume, build the optimiser with the same configuration and
/// groups, [`Optimizer::load_state_dict`], and pass the parameters in the
/// same order: the restored state binds to them on the next `step` (a shape
/// mismatch is then an error, never a silent mix-up).
///
/// # Parameter groups
///
/// Group 0 is the default group: every parameter not placed in another group
/// with [`Optimizer::add_param_group`], with the configuration's learning rate
/// and weight decay. Further groups override the learning rate and/or the
/// weight decay (PyTorch's `param_groups`).
///
/// # Learning rate and schedules
///
/// [`Optimizer::set_learning_rate`] sets group 0's rate and rescales every
/// other group so that the ratio of its initial rate to group 0's initial
/// rate is kept: `lr_g = initial_lr_g · lr / initial_lr_0`. For every
/// schedule whose rate is the base rate times a factor (StepLR, MultiStepLR,
/// ExponentialLR, LinearLR, CosineAnnealing with `eta_min = 0`, their
/// compositions) this is exactly PyTorch's per-group behaviour, in which
/// each group's scheduler starts from that group's own initial rate. For
/// schedules with an absolute floor or target (`eta_min > 0`, OneCycleLR,
/// ReduceLROnPlateau's `min_lr`) the other groups follow proportionally
/// instead; drive them with [`Optimizer::set_group_learning_rate`] (one
/// schedule per group) when PyTorch's exact per-group values are needed.
pub trait Optimizer<T: Element = f32> {
    /// The algorithm's name, e.g. `"Adam"`.
    fn name(&self) -> &'static str;

    /// One update of every parameter that has a gradient in `grads`.
    ///
    /// Errors (changing nothing) if a gradient's shape differs from its
    /// parameter's, if restored state does not fit the parameter it binds to,
    /// or if a group's learning rate is negative or not finite (as
    /// [`Optimizer::set_learning_rate`] may have set it).
    fn step(&mut self, params: &mut [&mut Param<T>], grads: &Gradients<T>) -> Result<()>;

    /// The learning rate of the default group (group 0).
    fn learning_rate(&self) -> f64;

    /// Sets group 0's learning rate and rescales the other groups, keeping
    /// the ratio of their initial rates (see the trait documentation).
    fn set_learning_rate(&mut self, lr: f64);

    /// The parameter groups; index 0 is the default group.
    fn groups(&self) -> &[ParamGroup];

    /// Puts `ids` in a new group with its own learning rate and/or weight
    /// decay; returns the group's index. Errors if an id is already in a
    /// group or an override is negative or not finite.
    fn add_param_group(&mut self, ids: &[ParamId], overrides: GroupOverrides) -> Result<usize>;

    /// Sets the learning rate of one group only. Errors if the group does
    /// not exist or `lr` is negative or not finite.
    fn set_group_learning_rate(&mut self, group: usize, lr: f64) -> Result<()>;

    /// The optimiser's state as data: hyper-parameters, groups, and every
    /// parameter's buffers and step count keyed by its number (see above).
    fn state_dict(&self) -> OptimizerState<T>;

    /// Restores state saved by [`Optimizer::state_dict`] of the same
    /// algorithm: hyper-parameters, group rates and decays, per-parameter
    /// buffers. Errors, changing nothing, on any mismatch.
    fn load_state_dict(&mut self, state: &OptimizerState<T>) -> Result<()>;

    /// Forgets every parameter's state (moments, step counts); keeps the
    /// hyper-parameters and groups.
    fn reset_state(&mut self);
}

/// Per-group overrides of the optimiser's defaults (`None` keeps the default).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupOverrides {
    /// The group's learning rate.
    pub lr: Option<f64>,
    /// The group's weight decay.
    pub weight_decay: Option<f64>,
}

/// One parameter group (PyTorch's `optimizer.param_groups[i]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup {
    /// The members; empty for group 0, which holds every parameter that is
    /// in no other group.
    pub params: Vec<ParamId>,
    /// The current learning rate.
    pub lr: f64,
    /// The learning rate the group was created with (PyTorch's `initial_lr`).
    pub initial_lr: f64,
    /// The weight decay (its meaning — L2 or decoupled — is the rule's).
    pub weight_decay: f64,
}

/// The learning rate and weight decay in force for one parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hyper {
    pub lr: f64,
    pub weight_decay: f64,
}

/// One parameter's state: its step count, shape, and the rule's buffers
/// (each as long as the parameter), in the order the rule names them. The
/// shape is unknown (`None`) for state restored from a rule without buffers
/// (plain SGD) until the state binds to a parameter.
#[derive(Debug, Clone)]
pub(crate) struct Slot<T> {
    pub step: u64,
    pub shape: Option<Vec<usize>>,
    pub bufs: Vec<Vec<T>>,
}

/// Slots by parameter number.
pub(crate) type Slots<T> = BTreeMap<usize, Slot<T>>;

/// The bookkeeping shared by every optimiser.
#[derive(Debug, Clone)]
pub(crate) struct Core<T> {
    pub name: &'static str,
    step_op: &'static str,
    load_op: &'static str,
    groups: Vec<ParamGroup>,
    group_of: HashMap<ParamId, usize>,
    order: Vec<ParamId>,
    index_of: HashMap<ParamId, usize>,
    slots: Slots<T>,
}

/// Errors unless `x` is finite and non-negative.
pub(crate) fn check_non_negative(op: &'static str, what: &str, x: f64) -> Result<()> {
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("invalid {what}: {x} (must be finite and >= 0)"),
        ))
    }
}

/// Errors unless `0 <= x < 1` (`x <= 1` when `closed`).
pub(crate) fn check_unit(op: &'static str, what: &str, x: f64, closed: bool) -> Result<()> {
    let ok = x >= 0.0 && if closed { x <= 1.0 } else { x < 1.0 };
    if ok {
        Ok(())
    } else {
        let range = if closed { "[0, 1]" } else { "[0, 1)" };
        Err(Error::invalid(
            op,
            format!("invalid {what}: {x} (must be in {range})"),
        ))
    }
}

impl<T: Element> Core<T> {
    pub fn new(
        name: &'static str,
        step_op: &'static str,
        load_op: &'static str,
        lr: f64,
        weight_decay: f64,
    ) -> Self {
        Core {
            name,
            step_op,
            load_op,
            groups: vec![ParamGroup {
                params: Vec::new(),
                lr,
                initial_lr: lr,
                weight_decay,
            }],
            group_of: HashMap::new(),
            order: Vec::new(),
            index_of: HashMap::new(),
            slots: BTreeMap::new(),
        }
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    pub fn learning_rate(&self) -> f64 {
        self.groups[0].lr
    }

    pub fn set_learning_rate(&mut self, lr: f64) {
        let base = self.groups[0].initial_lr;
        for (i, g) in self.groups.iter_mut().enumerate() {
            g.lr = if i == 0 || base == 0.0 {
                lr
            } else {
                g.initial_lr * (lr / base)
            };
        }
    }

    pub fn set_group_learning_rate(&mut self, group: usize, lr: f64) -> Result<()> {
        check_non_negative(
            "Optimizer::set_group_learning_rate",
            &format!("{} group learning rate", self.name),
            lr,
        )?;
        let n = self.groups.len();
        match self.groups.get_mut(group) {
            Some(g) => {
                g.lr = lr;
                Ok(())
            }
            None => Err(Error::invalid(
                "Optimizer::set_group_learning_rate",
                format!("{}: group {group} does not exist ({n} groups)", self.name),
            )),
        }
    }

    pub fn add_param_group(&mut self, ids: &[ParamId], ov: GroupOverrides) -> Result<usize> {
        let op = "Optimizer::add_param_group";
        if let Some(lr) = ov.lr {
            check_non_negative(op, &format!("{} group learning rate", self.name), lr)?;
        }
        if let Some(wd) = ov.weight_decay {
            check_non_negative(op, &format!("{} group weight_decay", self.name), wd)?;
        }
        let mut members: Vec<ParamId> = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(&g) = self.group_of.get(&id) {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{}: parameter {} is already in group {g}; a parameter belongs to one group only",
                        self.name,
                        id.as_u64()
                    ),
                ));
            }
            if !members.contains(&id) {
                members.push(id);
            }
        }
        let g = self.groups.len();
        let lr = ov.lr.unwrap_or(self.groups[0].initial_lr);
        self.groups.push(ParamGroup {
            params: members.clone(),
            lr,
            initial_lr: lr,
            weight_decay: ov.weight_decay.unwrap_or(self.groups[0].weight_decay),
        });
        for id in members {
            self.group_of.insert(id, g);
        }
        Ok(g)
    }

    pub fn reset_state(&mut self) {
        self.slots.clear();
    }

    /// One step: validates everything first, then updates every parameter
    /// with a gradient. `init(numel)` makes the buffers of a new slot;
    /// `prepare(hyper, t)` returns the element-wise kernel of one parameter at
    /// its step `t` (counted from 1, already incremented). The kernels of all
    /// parameters run in one pass over fixed-size chunks (see [`run_chunks`]).
    pub fn step<I, P, K>(
        &mut self,
        params: &mut [&mut Param<T>],
        grads: &Gradients<T>,
        init: I,
        prepare: P,
    ) -> Result<()>
    where
        I: Fn(usize) -> Vec<Vec<T>>,
        P: Fn(Hyper, u64) -> K,
        K: Fn(&mut [T], &[T], &mut [&mut [T]]) + Sync,
    {
        // Validate (and number new parameters provisionally) before any change.
        // A rate set out of range (set_learning_rate cannot fail) stops here.
        for (g, group) in self.groups.iter().enumerate() {
            if !(group.lr.is_finite() && group.lr >= 0.0) {
                return Err(Error::invalid(
                    self.step_op,
                    format!(
                        "{}: the learning rate of group {g} is {} (must be finite and >= 0)",
                        self.name, group.lr
                    ),
                ));
            }
        }
        let mut next = self.order.len();
        let mut index = Vec::with_capacity(params.len());
        for (pos, p) in params.iter().enumerate() {
            let id = p.id();
            let i = match self.index_of.get(&id) {
                Some(&i) => i,
                None => {
                    next += 1;
                    next - 1
                }
            };
            if let Some(g) = grads.get_by_id(id) {
                if g.shape() != p.shape() {
                    return Err(Error::shape(
                        self.step_op,
                        &[p.shape(), g.shape()],
                        format!(
                            "{}: the gradient of parameter {pos} must have the parameter's shape",
                            self.name
                        ),
                    ));
                }
                if let Some(Slot {
                    shape: Some(shape), ..
                }) = self.slots.get(&i)
                {
                    if shape != p.shape() {
                        return Err(Error::shape(
                            self.step_op,
                            &[p.shape(), shape],
                            format!(
                                "{}: parameter {pos} does not fit state {i} (restored with the parameters in another order?)",
                                self.name
                            ),
                        ));
                    }
                }
            }
            index.push(i);
        }
        for (p, &i) in params.iter().zip(&index) {
            if i == self.order.len() {
                self.order.push(p.id());
                self.index_of.insert(p.id(), i);
            }
        }
        // Take the updated parameters' slots out (disjoint borrows), run, put back.
        let mut kernels = Vec::new();
        let mut taken: Vec<(usize, Slot<T>)> = Vec::new();
        let mut targets: Vec<(&mut [T], &[T])> = Vec::new();
        for (p, &i) in params.iter_mut().zip(&index) {
            let Some(g) = grads.get_by_id(p.id()) else {
                continue;
            };
            let group = &self.groups[self.group_of.get(&p.id()).copied().unwrap_or(0)];
            let hyper = Hyper {
                lr: group.lr,
                weight_decay: group.weight_decay,
            };
            let mut slot = self.slots.remove(&i).unwrap_or_else(|| Slot {
                step: 0,
                shape: None,
                bufs: init(p.value().numel()),
            });
            slot.shape = Some(p.shape().to_vec());
            slot.step += 1;
            kernels.push(prepare(hyper, slot.step));
            taken.push((i, slot));
            targets.push((p.value_mut().data_mut(), g.as_slice()));
        }
        {
            let jobs = targets
                .into_iter()
                .zip(taken.iter_mut())
                .map(|((p, g), (_, slot))| (p, g, slot.bufs.as_mut_slice()));
            run_chunks(&kernels, jobs);
        }
        for (i, slot) in taken {
            self.slots.insert(i, slot);
        }
        Ok(())
    }

    /// The state as data; `names` names the rule's buffers in slot order.
    pub fn state_dict(&self, hyper: BTreeMap<String, f64>, names: &[&str]) -> OptimizerState<T> {
        let groups = self
            .groups
            .iter()
            .map(|g| GroupState {
                lr: g.lr,
                initial_lr: g.initial_lr,
                weight_decay: g.weight_decay,
            })
            .collect();
        let mut params = BTreeMap::new();
        for (&i, slot) in &self.slots {
            let buffers = names
                .iter()
                .zip(&slot.bufs)
                .map(|(name, b)| {
                    // A slot with buffers always knows its shape.
                    let shape = slot.shape.clone().unwrap_or_else(|| vec![b.len()]);
                    let t = Tensor::from_vec(b.clone(), &shape)
                        .expect("a slot's buffers have its shape's length");
                    (name.to_string(), t)
                })
                .collect();
            params.insert(
                i,
                ParamState {
                    step: slot.step,
                    buffers,
                },
            );
        }
        OptimizerState {
            optimizer: self.name.to_string(),
            hyper,
            groups,
            params,
        }
    }

    /// Checks `state` against this optimiser (name, group count, buffer
    /// names and shapes) and returns the slots it describes, changing nothing.
    pub fn check_state(&self, state: &OptimizerState<T>, names: &[&str]) -> Result<Slots<T>> {
        let op = self.load_op;
        self.check_name(state)?;
        if state.groups.len() != self.groups.len() {
            return Err(Error::invalid(
                op,
                format!(
                    "{}: the state has {} parameter groups but the optimiser has {}",
                    self.name,
                    state.groups.len(),
                    self.groups.len()
                ),
            ));
        }
        for (i, g) in state.groups.iter().enumerate() {
            for (what, x) in [
                ("lr", g.lr),
                ("initial_lr", g.initial_lr),
                ("weight_decay", g.weight_decay),
            ] {
                check_non_negative(op, &format!("{} group {i} {what}", self.name), x)?;
            }
        }
        let mut slots = BTreeMap::new();
        for (&i, ps) in &state.params {
            let mut got: Vec<&str> = ps.buffers.keys().map(String::as_str).collect();
            let mut want: Vec<&str> = names.to_vec();
            got.sort_unstable();
            want.sort_unstable();
            if got != want {
                return Err(Error::invalid(
                    op,
                    format!(
                        "{}: state {i} holds buffers {got:?} but this configuration needs {want:?}",
                        self.name
                    ),
                ));
            }
            let shape = names.first().map(|n| ps.buffers[*n].shape().to_vec());
            let mut bufs = Vec::with_capacity(names.len());
            for name in names {
                let t = &ps.buffers[*name];
                let first = shape.as_deref().unwrap_or_default();
                if t.shape() != first {
                    return Err(Error::shape(
                        op,
                        &[first, t.shape()],
                        format!(
                            "{}: the buffers of state {i} must all have one shape ({name} differs)",
                            self.name
                        ),
                    ));
                }
                bufs.push(t.to_vec());
            }
            slots.insert(
                i,
                Slot {
                    step: ps.step,
                    shape,
                    bufs,
                },
            );
        }
        Ok(slots)
    }

    /// Errors unless `state` was saved by this algorithm.
    pub fn check_name(&self, state: &OptimizerState<T>) -> Result<()> {
        if state.optimizer != self.name {
            return Err(Error::invalid(
                self.load_op,
                format!("the state is {}'s, not {}'s", state.optimizer, self.name),
            ));
        }
        Ok(())
    }

    /// Commits state checked by [`Core::check_state`].
    pub fn commit_state(&mut self, state: &OptimizerState<T>, slots: Slots<T>) {
        for (g, s) in self.groups.iter_mut().zip(&state.groups) {
            g.lr = s.lr;
            g.initial_lr = s.initial_lr;
            g.weight_decay = s.weight_decay;
        }
        self.slots = slots;
    }
}

/// One chunk of work: the job's index, values, gradient and state buffers.
type Chunk<'a, T> = (usize, &'a mut [T], &'a [T], Vec<&'a mut [T]>);

/// Elements per chunk of the element-wise pass.
const CHUNK: usize = 1 << 14;
/// Steps touching fewer elements in all run on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Runs `kernels[j](p, g, bufs)` for every job `j` — a parameter's values,
/// its gradient and its state buffers — in one pass: every parameter is cut
/// into fixed chunks of [`CHUNK`] elements and the chunks of all parameters
/// are spread over rayon's pool (on the calling thread when the step is
/// small). Every element's update depends on that element only, so the
/// result is the same bits at any thread count and any chunking.
pub(crate) fn run_chunks<'a, T, K>(
    kernels: &[K],
    jobs: impl Iterator<Item = (&'a mut [T], &'a [T], &'a mut [Vec<T>])>,
) where
    T: Element,
    K: Fn(&mut [T], &[T], &mut [&mut [T]]) + Sync,
{
    let mut work: Vec<Chunk<'_, T>> = Vec::new();
    let mut total = 0usize;
    for (j, (p, g, bufs)) in jobs.enumerate() {
        total += p.len();
        let mut buf_chunks: Vec<_> = bufs.iter_mut().map(|b| b.chunks_mut(CHUNK)).collect();
        for (pc, gc) in p.chunks_mut(CHUNK).zip(g.chunks(CHUNK)) {
            let bc = buf_chunks
                .iter_mut()
                .map(|it| it.next().expect("buffers are as long as the parameter"))
                .collect();
            work.push((j, pc, gc, bc));
        }
    }
    if total < PARALLEL_MIN || rayon::current_num_threads() < 2 {
        for (j, p, g, mut b) in work {
            kernels[j](p, g, &mut b);
        }
    } else {
        work.into_par_iter()
            .with_max_len(1)
            .for_each(|(j, p, g, mut b)| kernels[j](p, g, &mut b));
    }
}

/// Shorthand for an element constant from an `f64` (PyTorch computes its
/// scalars in double precision and casts them to the tensor's type).
#[inline(always)]
pub(crate) fn c<T: Element>(x: f64) -> T {
    T::from_f64_lossy(x)
}

/// Reads a hyper-parameter from a saved map.
pub(crate) fn hyper_get(
    op: &'static str,
    name: &str,
    map: &BTreeMap<String, f64>,
    key: &str,
) -> Result<f64> {
    map.get(key).copied().ok_or_else(|| {
        Error::invalid(
            op,
            format!("{name}: the saved hyper-parameters lack `{key}`"),
        )
    })
}

/// Reads a boolean hyper-parameter (saved as 0 or 1).
pub(crate) fn hyper_bool(
    op: &'static str,
    name: &str,
    map: &BTreeMap<String, f64>,
    key: &str,
) -> Result<bool> {
    let x = hyper_get(op, name, map, key)?;
    if x == 0.0 {
        Ok(false)
    } else if x == 1.0 {
        Ok(true)
    } else {
        Err(Error::invalid(
            op,
            format!("{name}: saved flag `{key}` is {x}, not 0 or 1"),
        ))
    }
}

/// Implements the [`Optimizer`] methods that only forward to `self.core`
/// and the config's `to_hyper`/`from_hyper`/`buffer_names`.
macro_rules! forward_optimizer_methods {
    ($config:ty) => {
        fn name(&self) -> &'static str {
            self.core.name
        }
        fn learning_rate(&self) -> f64 {
            self.core.learning_rate()
        }
        fn set_learning_rate(&mut self, lr: f64) {
            self.core.set_learning_rate(lr)
        }
        fn groups(&self) -> &[$crate::ParamGroup] {
            self.core.groups()
        }
        fn add_param_group(
            &mut self,
            ids: &[anneal_autograd::ParamId],
            overrides: $crate::GroupOverrides,
        ) -> anneal_tensor::Result<usize> {
            self.core.add_param_group(ids, overrides)
        }
        fn set_group_learning_rate(&mut self, group: usize, lr: f64) -> anneal_tensor::Result<()> {
            self.core.set_group_learning_rate(group, lr)
        }
        fn state_dict(&self) -> $crate::OptimizerState<T> {
            self.core
                .state_dict(self.config.to_hyper(), &self.config.buffer_names())
        }
        fn load_state_dict(
            &mut self,
            state: &$crate::OptimizerState<T>,
        ) -> anneal_tensor::Result<()> {
            self.core.check_name(state)?;
            let config = <$config>::from_hyper(&state.hyper)?;
            config.validate()?;
            let slots = self.core.check_state(state, &config.buffer_names())?;
            self.core.commit_state(state, slots);
            self.config = config;
            Ok(())
        }
        fn reset_state(&mut self) {
            self.core.reset_state()
        }
    };
}
pub(crate) use forward_optimizer_methods;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_learning_rate_keeps_group_ratios() {
        let mut core = Core::<f64>::new("Test", "Test::step", "Test::load", 0.1, 0.0);
        let a = ParamId::fresh();
        let g = core
            .add_param_group(
                &[a],
                GroupOverrides {
                    lr: Some(0.02),
                    weight_decay: Some(0.5),
                },
            )
            .unwrap();
        assert_eq!(g, 1);
        core.set_learning_rate(0.05);
        assert_eq!(core.groups()[0].lr, 0.05);
        assert!((core.groups()[1].lr - 0.01).abs() < 1e-15);
        assert_eq!(core.groups()[1].weight_decay, 0.5);
        core.set_group_learning_rate(1, 0.3).unwrap();
        assert_eq!(core.groups()[1].lr, 0.3);
        assert!(core.set_group_learning_rate(2, 0.3).is_err());
    }

    #[test]
    fn a_parameter_joins_one_group_only() {
        let mut core = Core::<f32>::new("Test", "Test::step", "Test::load", 0.1, 0.0);
        let a = ParamId::fresh();
        core.add_param_group(&[a], GroupOverrides::default())
            .unwrap();
        let e = core
            .add_param_group(&[a], GroupOverrides::default())
            .unwrap_err();
        assert!(e.to_string().contains("already in group 1"), "{e}");
        let e = core
            .add_param_group(
                &[ParamId::fresh()],
                GroupOverrides {
                    lr: Some(-1.0),
                    weight_decay: None,
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("-1"), "{e}");
    }

    #[test]
    fn chunked_pass_covers_every_element_of_every_job() {
        let sizes = [PARALLEL_MIN + 12_345, 3, CHUNK, 1];
        let mut ps: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![1.0f32; n]).collect();
        let gs: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| i as f32).collect())
            .collect();
        let mut bufs: Vec<Vec<Vec<f32>>> = sizes
            .iter()
            .map(|&n| vec![vec![0.0f32; n], vec![2.0f32; n]])
            .collect();
        let kernels: Vec<_> = (0..sizes.len())
            .map(|j| {
                move |p: &mut [f32], g: &[f32], b: &mut [&mut [f32]]| {
                    for i in 0..p.len() {
                        p[i] += g[i] + j as f32;
                        b[0][i] = g[i] * 2.0;
                        b[1][i] += 1.0;
                    }
                }
            })
            .collect();
        let jobs = ps
            .iter_mut()
            .zip(&gs)
            .zip(bufs.iter_mut())
            .map(|((p, g), b)| (p.as_mut_slice(), g.as_slice(), b.as_mut_slice()));
        run_chunks(&kernels, jobs);
        for (j, &n) in sizes.iter().enumerate() {
            for i in (0..n).step_by(977).chain([n - 1]) {
                assert_eq!(ps[j][i], 1.0 + i as f32 + j as f32);
                assert_eq!(bufs[j][0][i], 2.0 * i as f32);
                assert_eq!(bufs[j][1][i], 3.0);
            }
        }
    }
}
