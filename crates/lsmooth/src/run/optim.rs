//! AdamW and SGD with momentum, with their state exposed so that a checkpoint can hold it and a resumed run
//! continues to the same numbers. (candle-nn's optimisers keep their moments private, and its SGD has no
//! momentum: a dozen lines each here buy exact resumption.)

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// Which optimiser, with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW (Loshchilov and Hutter), PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, decoupled decay.
    AdamW,
    /// SGD with (heavy-ball) momentum and L2 weight decay added to the gradient, as PyTorch's `SGD`.
    Sgd {
        /// Momentum, e.g. 0.9.
        momentum: f64,
    },
}

/// An optimiser over a fixed list of parameters.
#[derive(Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    weight_decay: f64,
    /// Steps taken.
    pub step: u64,
    /// Per parameter: AdamW's first and second moments, or SGD's momentum buffer (one tensor).
    pub state: Vec<Vec<Tensor>>,
}

impl Optimizer {
    /// Zero state for `params`.
    pub fn new(kind: OptimizerKind, lr: f64, weight_decay: f64, params: &[(String, Var)]) -> Result<Self> {
        let per = match kind {
            OptimizerKind::AdamW => 2,
            OptimizerKind::Sgd { .. } => 1,
        };
        let state = params
            .iter()
            .map(|(_, v)| (0..per).map(|_| v.zeros_like()).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kind,
            lr,
            weight_decay,
            step: 0,
            state,
        })
    }

    /// The names of the state tensors of parameter `name`, for checkpoints.
    pub fn state_names(&self, name: &str) -> Vec<String> {
        match self.kind {
            OptimizerKind::AdamW => vec![format!("adamw.m.{name}"), format!("adamw.v.{name}")],
            OptimizerKind::Sgd { .. } => vec![format!("sgd.momentum.{name}")],
        }
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self, params: &[(String, Var)], grads: &GradStore) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        for ((_, var), state) in params.iter().zip(&mut self.state) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            match self.kind {
                OptimizerKind::AdamW => {
                    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
                    let m = ((&state[0] * b1)? + (g * (1.0 - b1))?)?;
                    let v = ((&state[1] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let m_hat = (&m / (1.0 - b1.powi(t)))?;
                    let v_hat = (&v / (1.0 - b2.powi(t)))?;
                    let decayed = (var.as_tensor() * (1.0 - self.lr * self.weight_decay))?;
                    let update = (m_hat / (v_hat.sqrt()? + eps)?)?;
                    var.set(&(decayed - (update * self.lr)?)?)?;
                    state[0] = m;
                    state[1] = v;
                }
                OptimizerKind::Sgd { momentum } => {
                    let g = if self.weight_decay != 0.0 {
                        (g + (var.as_tensor() * self.weight_decay)?)?
                    } else {
                        g.clone()
                    };
                    let buf = if self.step == 1 {
                        g
                    } else {
                        ((&state[0] * momentum)? + g)?
                    };
                    var.set(&(var.as_tensor() - (&buf * self.lr)?)?)?;
                    state[0] = buf;
                }
            }
        }
        Ok(())
    }
}
