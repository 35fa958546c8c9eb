//! The classifiers `lsmooth train` builds: an MLP and a small CNN on candle tensors, with parameters initialised
//! from the run's seed (PyTorch's default: uniform in `±1/sqrt(fan_in)`), so a seed fixes the numbers.

use candle_core::{DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use label_smoothing::rng::SplitMix64;

/// Which network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelKind {
    /// Fully connected layers of the given widths with ReLU, then a linear head.
    Mlp {
        /// Hidden widths, e.g. `[256, 256]`.
        hidden: Vec<usize>,
    },
    /// conv3x3(16)-ReLU-maxpool2, conv3x3(32)-ReLU-maxpool2, a 128-unit ReLU layer, a linear head.
    Cnn,
}

impl ModelKind {
    /// A short description: `mlp 784-256-256-10`, `cnn`.
    pub fn describe(&self, inputs: usize, classes: usize) -> String {
        match self {
            ModelKind::Mlp { hidden } => {
                let widths: Vec<String> = std::iter::once(inputs)
                    .chain(hidden.iter().copied())
                    .chain(std::iter::once(classes))
                    .map(|w| w.to_string())
                    .collect();
                format!("mlp {}", widths.join("-"))
            }
            ModelKind::Cnn => "cnn conv16-conv32-fc128".into(),
        }
    }
}

/// A network: named parameters and how to run them.
#[derive(Debug)]
pub struct Model {
    kind: ModelKind,
    rows: usize,
    cols: usize,
    params: Vec<(String, Var)>,
}

fn uniform(rng: &mut SplitMix64, shape: &[usize], bound: f64, device: &Device) -> Result<Var> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect();
    Var::from_vec(data, shape, device)
}

impl Model {
    /// A freshly initialised network for `rows x cols` images and `classes` classes.
    pub fn new(kind: &ModelKind, rows: usize, cols: usize, classes: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = SplitMix64::new(seed ^ 0x6d6f_6465_6c21);
        let mut params = Vec::new();
        let mut dense = |name: &str, inputs: usize, outputs: usize, params: &mut Vec<(String, Var)>| -> Result<()> {
            let bound = 1.0 / (inputs as f64).sqrt();
            params.push((
                format!("{name}.weight"),
                uniform(&mut rng, &[outputs, inputs], bound, device)?,
            ));
            params.push((format!("{name}.bias"), uniform(&mut rng, &[outputs], bound, device)?));
            Ok(())
        };
        match kind {
            ModelKind::Mlp { hidden } => {
                let mut inputs = rows * cols;
                for (i, &h) in hidden.iter().enumerate() {
                    dense(&format!("fc{}", i + 1), inputs, h, &mut params)?;
                    inputs = h;
                }
                dense("head", inputs, classes, &mut params)?;
            }
            ModelKind::Cnn => {
                for (name, cin, cout) in [("conv1", 1, 16), ("conv2", 16, 32)] {
                    let fan_in = cin * 9;
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    let mut r = SplitMix64::new(seed ^ 0x636f_6e76 ^ cout as u64);
                    params.push((
                        format!("{name}.weight"),
                        uniform(&mut r, &[cout, cin, 3, 3], bound, device)?,
                    ));
                    params.push((format!("{name}.bias"), uniform(&mut r, &[cout], bound, device)?));
                }
                dense("fc1", 32 * (rows / 4) * (cols / 4), 128, &mut params)?;
                dense("head", 128, classes, &mut params)?;
            }
        }
        Ok(Self {
            kind: kind.clone(),
            rows,
            cols,
            params,
        })
    }

    /// The parameters, by name, in a fixed order.
    pub fn params(&self) -> &[(String, Var)] {
        &self.params
    }

    fn param(&self, name: &str) -> &Tensor {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .unwrap_or_else(|| panic!("parameter {name} exists by construction"))
    }

    fn dense(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.param(&format!("{name}.weight")).t()?)?
            .broadcast_add(self.param(&format!("{name}.bias")))
    }

    /// The penultimate activations `[B, D]` (what the head sees) of images `[B, rows * cols]`.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        match &self.kind {
            ModelKind::Mlp { hidden } => {
                let mut h = x.clone();
                for i in 0..hidden.len() {
                    h = self.dense(&format!("fc{}", i + 1), &h)?.relu()?;
                }
                Ok(h)
            }
            ModelKind::Cnn => {
                let b = x.dim(0)?;
                let mut h = x.reshape((b, 1, self.rows, self.cols))?;
                for name in ["conv1", "conv2"] {
                    let bias = self.param(&format!("{name}.bias"));
                    h = h
                        .conv2d(self.param(&format!("{name}.weight")), 1, 1, 1, 1)?
                        .broadcast_add(&bias.reshape((1, bias.dim(0)?, 1, 1))?)?
                        .relu()?
                        .max_pool2d(2)?;
                }
                self.dense("fc1", &h.flatten_from(1)?)?.relu()
            }
        }
    }

    /// The logits `[B, K]` of images `[B, rows * cols]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.dense("head", &self.features(x)?)
    }

    /// The head's weight matrix `[K, D]`: the class templates.
    pub fn head_weights(&self) -> &Tensor {
        self.param("head.weight")
    }

    /// The head's weight matrix `[K, D]` as row-major values.
    pub fn head_weight_values(&self) -> Result<Vec<f32>> {
        self.head_weights().flatten_all()?.to_vec1::<f32>()
    }

    /// Replaces every parameter's value (from a checkpoint); `get` returns the tensor saved under a name.
    pub fn load(&self, mut get: impl FnMut(&str) -> Option<Tensor>) -> std::result::Result<(), String> {
        for (name, var) in &self.params {
            let t = get(name).ok_or_else(|| format!("no tensor {name}"))?;
            if t.dims() != var.dims() || t.dtype() != DType::F32 {
                return Err(format!(
                    "{name}: shape {:?} {:?}, the model has {:?} f32",
                    t.dims(),
                    t.dtype(),
                    var.dims()
                ));
            }
            var.set(&t).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
