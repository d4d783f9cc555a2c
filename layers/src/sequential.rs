//! Sequential composition (`torch.nn.Sequential`).

use anneal_autograd::Var;
use anneal_tensor::{Element, Result};

use crate::hooks::HookableLayer;
use crate::module::{join, Entry, EntryMut, Module};

/// Runs modules one after another; their parameters are named `0.weight`,
/// `1.bias`, … as in PyTorch.
#[derive(Default)]
pub struct Sequential<T: Element = f32> {
    layers: Vec<Box<dyn Module<T>>>,
}

impl<T: Element> Sequential<T> {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential { layers: Vec::new() }
    }

    /// Appends a module (builder style).
    pub fn push(mut self, m: impl Module<T> + 'static) -> Self {
        self.layers.push(Box::new(m));
        self
    }

    /// Appends a boxed module.
    pub fn push_boxed(&mut self, m: Box<dyn Module<T>>) {
        self.layers.push(m);
    }

    /// Number of modules.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The module at `i`.
    pub fn get(&self, i: usize) -> Option<&dyn Module<T>> {
        self.layers.get(i).map(|b| b.as_ref())
    }
}

impl<T: Element> Module<T> for Sequential<T> {
    fn forward(&self, x: &Var<T>) -> Result<Var<T>> {
        let mut h = x.clone();
        for l in &self.layers {
            h = l.forward(&h)?;
        }
        Ok(h)
    }

    fn forward_train(&mut self, x: &Var<T>) -> Result<Var<T>> {
        let mut h = x.clone();
        for l in &mut self.layers {
            h = l.forward_train(&h)?;
        }
        Ok(h)
    }

    fn reseed(&mut self, seed: u64) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.reseed(crate::mix_seed(seed, i as u64));
        }
    }

    fn visit_layers_mut<'a>(
        &'a mut self,
        prefix: &str,
        f: &mut dyn FnMut(&str, HookableLayer<'a, T>),
    ) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_layers_mut(&join(prefix, &i.to_string()), f);
        }
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, T>)) {
        for (i, l) in self.layers.iter().enumerate() {
            l.visit(&join(prefix, &i.to_string()), f);
        }
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, T>)) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.visit_mut(&join(prefix, &i.to_string()), f);
        }
    }
}
