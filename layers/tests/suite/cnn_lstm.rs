//! A state dict written by PyTorch for a small CNN+LSTM model loads
//! unchanged (strict: every name, shape and dtype) and reproduces PyTorch's
//! eval-mode outputs. The architecture is `CnnLstm` in
//! `tests/fixtures/generate.py`.

use crate::common;

use anneal_autograd::Var;
use anneal_layers::{
    join, load_safetensors, BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Entry, EntryMut,
    Linear, LinearConfig, Lstm, LstmConfig, MaxPool2d, Module,
};
use anneal_tensor::Result;
use rand::SeedableRng;

/// conv → bn → relu → maxpool → rows as a sequence → LSTM → last step → fc,
/// written the way a user builds their own module from fields.
struct CnnLstm {
    conv: Conv2d,
    bn: BatchNorm,
    pool: MaxPool2d,
    lstm: Lstm,
    fc: Linear,
}

impl Module for CnnLstm {
    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self
            .pool
            .forward(&self.bn.forward(&self.conv.forward(x)?)?.relu())?;
        let n = h.shape()[0];
        // [N, C, H, W] → [N, H, C, W] → [N, T = H, C·W]: time = image row.
        let seq = h.permute(&[0, 2, 1, 3])?.reshape(&[n, 4, 16])?;
        let out = self.lstm.forward(&seq)?;
        let last = out.narrow(1, 3, 1)?.reshape(&[n, 8])?;
        self.fc.forward(&last)
    }

    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'a, f32>)) {
        self.conv.visit(&join(prefix, "conv"), f);
        self.bn.visit(&join(prefix, "bn"), f);
        self.lstm.visit(&join(prefix, "lstm"), f);
        self.fc.visit(&join(prefix, "fc"), f);
    }

    fn visit_mut<'a>(&'a mut self, prefix: &str, f: &mut dyn FnMut(&str, EntryMut<'a, f32>)) {
        self.conv.visit_mut(&join(prefix, "conv"), f);
        self.bn.visit_mut(&join(prefix, "bn"), f);
        self.lstm.visit_mut(&join(prefix, "lstm"), f);
        self.fc.visit_mut(&join(prefix, "fc"), f);
    }
}

#[test]
fn pytorch_cnn_lstm_state_dict_loads_and_matches() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut model = CnnLstm {
        conv: Conv2dConfig::new(1, 4, 3)
            .with_padding(1)
            .init(&mut rng)
            .unwrap(),
        bn: BatchNormConfig::new(4).init().unwrap(),
        pool: MaxPool2d::new(2),
        lstm: LstmConfig::new(16, 8).init(&mut rng).unwrap(),
        fc: LinearConfig::new(8, 3).init(&mut rng).unwrap(),
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let report = load_safetensors(&mut model, dir.join("cnn_lstm.safetensors"), true).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert_eq!(model.bn.num_batches_tracked, 5);
    let io = common::load("cnn_lstm_io");
    let y = model.forward(&Var::constant(io.tensor("input"))).unwrap();
    common::assert_close(
        "cnn_lstm output",
        y.value(),
        &io.tensor("output"),
        1e-5,
        1e-6,
    );
}
