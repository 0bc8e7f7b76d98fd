//! The update rules of fine-tuning, on the trained coordinates only (a k-vector
//! under a mask, all N parameters for full fine-tuning), in f64 on the host.
//!
//! Each follows PyTorch's `torch.optim` step by step, so that a run here and a run
//! of PyTorch on the same gradients give the same updates to rounding:
//! - **AdamW** (`torch.optim.AdamW`): `m = b1 m + (1 - b1) g`,
//!   `v = b2 v + (1 - b2) g^2`, `theta -= lr wd theta` (decoupled decay), then
//!   `theta -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)`;
//! - **SGD** with heavy-ball momentum (`torch.optim.SGD`, dampening 0): `g += wd
//!   theta` (coupled decay), `buf = g` at the first step then `buf = mu buf + g`,
//!   `theta -= lr buf`.
//!
//! Before the rule: the learning rate of the step ([`Schedule`]: constant after a
//! linear warm-up, the paper's) and the gradient clipped to a global norm
//! (`torch.nn.utils.clip_grad_norm_`: scaled by `max / (norm + 1e-6)` when that is
//! below 1).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[value(name = "adamw")]
    AdamW,
    Sgd,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Sgd => "sgd",
        }
    }
}

/// The hyperparameters of an update rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSettings {
    pub kind: OptimizerKind,
    /// The peak learning rate (after warm-up).
    pub lr: f64,
    /// AdamW's `beta1`, `beta2` and `eps`.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled for AdamW, coupled (added to the gradient) for SGD.
    pub weight_decay: f64,
    /// SGD's heavy-ball momentum.
    pub momentum: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// The global gradient norm is clipped to this (over the trained coordinates).
    pub clip: Option<f64>,
}

impl Default for OptimizerSettings {
    /// The paper's: AdamW (0.9, 0.999, 1e-8), no weight decay, a tiny warm-up,
    /// gradients clipped to norm 1 (HuggingFace's default).
    fn default() -> Self {
        OptimizerSettings {
            kind: OptimizerKind::AdamW,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            warmup_steps: 2,
            clip: Some(1.0),
        }
    }
}

impl OptimizerSettings {
    /// Refuses values no update rule can use, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let positive = |flag: &str, x: f64| {
            if x.is_finite() && x > 0.0 {
                Ok(())
            } else {
                Err(Error::arg(
                    flag,
                    format!("must be positive and finite, got {x}"),
                ))
            }
        };
        let unit = |flag: &str, x: f64| {
            if (0.0..1.0).contains(&x) {
                Ok(())
            } else {
                Err(Error::arg(flag, format!("must be in [0, 1), got {x}")))
            }
        };
        positive("--lr", self.lr)?;
        unit("--beta1", self.beta1)?;
        unit("--beta2", self.beta2)?;
        unit("--momentum", self.momentum)?;
        positive("--eps", self.eps)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::arg(
                "--weight-decay",
                format!("must be non-negative and finite, got {}", self.weight_decay),
            ));
        }
        if let Some(clip) = self.clip {
            positive("--clip", clip)?;
        }
        Ok(())
    }

    /// The sharpness at which this rule stops being stable on a quadratic with
    /// step `lr` (Cohen et al. 2021, 2022): `(2 + 2 mu) / lr` for SGD with momentum
    /// `mu` (`2 / lr` without), and `(2 + 2 b1) / ((1 - b1) lr)` for AdamW, whose
    /// relevant sharpness is the preconditioned one.
    pub fn stability_threshold(&self, lr: f64) -> f64 {
        match self.kind {
            OptimizerKind::Sgd => (2.0 + 2.0 * self.momentum) / lr,
            OptimizerKind::AdamW => (2.0 + 2.0 * self.beta1) / ((1.0 - self.beta1) * lr),
        }
    }
}

/// The learning rate of each step: a linear warm-up to the peak, then constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub peak: f64,
    pub warmup_steps: usize,
}

impl Schedule {
    /// The rate of step `t` (0-based): `peak (t + 1) / (warmup + 1)` during the
    /// warm-up, so that the first step already moves (HuggingFace's schedule gives
    /// step 0 a rate of 0), and `peak` after it.
    pub fn lr(&self, t: usize) -> f64 {
        if t < self.warmup_steps {
            // the factor first, then the product: PyTorch's LambdaLR rounds so
            self.peak * ((t + 1) as f64 / (self.warmup_steps + 1) as f64)
        } else {
            self.peak
        }
    }
}

/// The Euclidean norm of `x`.
pub fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Clips `g` to global norm `max` as `torch.nn.utils.clip_grad_norm_` does; returns
/// the norm before clipping.
pub fn clip_to_norm(g: &mut [f64], max: Option<f64>) -> f64 {
    let total = norm(g);
    if let Some(max) = max {
        let coef = max / (total + 1e-6);
        if coef < 1.0 {
            for x in g.iter_mut() {
                *x *= coef;
            }
        }
    }
    total
}

/// An update rule's state over the trained coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct Optimizer {
    pub settings: OptimizerSettings,
    /// Steps taken (PyTorch's `step` count, 1 after the first update).
    pub steps: usize,
    /// AdamW's first moment, or SGD's momentum buffer (empty without momentum).
    pub m: Vec<f64>,
    /// AdamW's second moment (empty for SGD).
    pub v: Vec<f64>,
}

impl Optimizer {
    /// A fresh state for `k` trained coordinates.
    pub fn new(settings: OptimizerSettings, k: usize) -> Self {
        let (m, v) = match settings.kind {
            OptimizerKind::AdamW => (vec![0.0; k], vec![0.0; k]),
            OptimizerKind::Sgd if settings.momentum > 0.0 => (vec![0.0; k], Vec::new()),
            OptimizerKind::Sgd => (Vec::new(), Vec::new()),
        };
        Optimizer {
            settings,
            steps: 0,
            m,
            v,
        }
    }

    /// The update `delta` (to be added to `theta`) for the gradient `g` (already
    /// clipped) at learning rate `lr`, advancing the state.
    pub fn step(&mut self, theta: &[f64], g: &[f64], lr: f64) -> Vec<f64> {
        self.steps += 1;
        let s = &self.settings;
        match s.kind {
            OptimizerKind::AdamW => {
                let t = self.steps as i32;
                let step_size = lr / (1.0 - s.beta1.powi(t));
                let bias2_sqrt = (1.0 - s.beta2.powi(t)).sqrt();
                let decay = lr * s.weight_decay;
                let mut delta = Vec::with_capacity(g.len());
                for i in 0..g.len() {
                    let (m, v) = (&mut self.m[i], &mut self.v[i]);
                    *m = s.beta1 * *m + (1.0 - s.beta1) * g[i];
                    *v = s.beta2 * *v + (1.0 - s.beta2) * g[i] * g[i];
                    let denom = v.sqrt() / bias2_sqrt + s.eps;
                    delta.push(-decay * theta[i] - step_size * *m / denom);
                }
                delta
            }
            OptimizerKind::Sgd => {
                let first = self.steps == 1;
                (0..g.len())
                    .map(|i| {
                        let mut d = g[i] + s.weight_decay * theta[i];
                        if s.momentum > 0.0 {
                            let buf = &mut self.m[i];
                            *buf = if first { d } else { s.momentum * *buf + d };
                            d = *buf;
                        }
                        -lr * d
                    })
                    .collect()
            }
        }
    }

    /// AdamW's preconditioner `sqrt(v_hat) + eps` per coordinate (`v_hat` the
    /// bias-corrected second moment), the diagonal `P` of its step `P^-1 m_hat`.
    /// `None` for SGD, or before the first step.
    pub fn preconditioner(&self) -> Option<Vec<f64>> {
        let s = &self.settings;
        if s.kind != OptimizerKind::AdamW || self.steps == 0 {
            return None;
        }
        let bias2 = 1.0 - s.beta2.powi(self.steps as i32);
        Some(self.v.iter().map(|v| (v / bias2).sqrt() + s.eps).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adamw(lr: f64) -> OptimizerSettings {
        OptimizerSettings {
            lr,
            ..OptimizerSettings::default()
        }
    }

    #[test]
    fn one_adamw_step_is_minus_lr_times_the_sign_with_eps() {
        let g = [3.0, -1e-3, 0.0, 2e-9];
        let theta = [1.0, 2.0, 3.0, 4.0];
        let mut opt = Optimizer::new(adamw(0.1), 4);
        let delta = opt.step(&theta, &g, 0.1);
        for (d, g) in delta.iter().zip(g) {
            let want = -0.1 * g / (g.abs() + 1e-8);
            assert!(
                (d - want).abs() <= 1e-15 * want.abs().max(1e-300),
                "{d} vs {want}"
            );
        }
    }

    #[test]
    fn adamw_follows_pytorch_over_steps_with_decay() {
        // PyTorch's recurrences written out for one coordinate, three steps.
        let s = OptimizerSettings {
            weight_decay: 0.1,
            ..adamw(0.01)
        };
        let mut opt = Optimizer::new(s.clone(), 1);
        let (mut theta, mut m, mut v) = (0.5_f64, 0.0_f64, 0.0_f64);
        for (t, g) in [0.3_f64, -0.2, 0.7].into_iter().enumerate() {
            let delta = opt.step(&[theta], &[g], 0.01)[0];
            let t = (t + 1) as i32;
            let mut p = theta * (1.0 - 0.01 * 0.1);
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            let denom = v.sqrt() / (1.0 - 0.999_f64.powi(t)).sqrt() + 1e-8;
            p -= 0.01 / (1.0 - 0.9_f64.powi(t)) * m / denom;
            assert!((theta + delta - p).abs() < 1e-15, "step {t}");
            theta = p;
        }
        let pre = opt.preconditioner().unwrap();
        assert!((pre[0] - ((v / (1.0 - 0.999_f64.powi(3))).sqrt() + 1e-8)).abs() < 1e-15);
    }

    #[test]
    fn sgd_with_momentum_follows_pytorch() {
        let s = OptimizerSettings {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 0.01,
            ..adamw(0.1)
        };
        let mut opt = Optimizer::new(s, 1);
        let (mut theta, mut buf) = (1.0_f64, 0.0_f64);
        for (t, g) in [0.5_f64, -0.25, 0.125].into_iter().enumerate() {
            let delta = opt.step(&[theta], &[g], 0.1)[0];
            let d = g + 0.01 * theta;
            buf = if t == 0 { d } else { 0.9 * buf + d };
            assert!((delta + 0.1 * buf).abs() < 1e-16);
            theta += delta;
        }
        assert!(opt.preconditioner().is_none());
        // plain SGD keeps no state and moves by -lr g
        let mut plain = Optimizer::new(
            OptimizerSettings {
                kind: OptimizerKind::Sgd,
                ..adamw(0.5)
            },
            2,
        );
        assert_eq!(plain.step(&[1.0, 1.0], &[2.0, -4.0], 0.5), vec![-1.0, 2.0]);
        assert!(plain.m.is_empty() && plain.v.is_empty());
    }

    #[test]
    fn warmup_is_linear_and_clipping_matches_pytorch() {
        let s = Schedule {
            peak: 0.3,
            warmup_steps: 2,
        };
        let rates: Vec<f64> = (0..4).map(|t| s.lr(t)).collect();
        assert_eq!(rates, vec![0.3 * (1.0 / 3.0), 0.3 * (2.0 / 3.0), 0.3, 0.3]);
        assert_eq!(
            Schedule {
                peak: 0.3,
                warmup_steps: 0
            }
            .lr(0),
            0.3
        );
        let mut g = vec![3.0, 4.0];
        assert_eq!(clip_to_norm(&mut g, Some(1.0)), 5.0);
        let coef = 1.0 / (5.0 + 1e-6);
        assert_eq!(g, vec![3.0 * coef, 4.0 * coef]);
        let mut small = vec![0.3, 0.4];
        clip_to_norm(&mut small, Some(1.0));
        assert_eq!(small, vec![0.3, 0.4]);
    }

    #[test]
    fn thresholds_and_bad_settings() {
        let a = adamw(0.01);
        assert!((a.stability_threshold(0.01) - 3800.0).abs() < 1e-9);
        let sgd = OptimizerSettings {
            kind: OptimizerKind::Sgd,
            momentum: 0.5,
            ..a.clone()
        };
        assert!((sgd.stability_threshold(0.1) - 30.0).abs() < 1e-12);
        for (bad, flag) in [
            (adamw(0.0), "--lr"),
            (adamw(f64::NAN), "--lr"),
            (
                OptimizerSettings {
                    beta2: 1.0,
                    ..a.clone()
                },
                "--beta2",
            ),
            (
                OptimizerSettings {
                    clip: Some(-1.0),
                    ..a.clone()
                },
                "--clip",
            ),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.starts_with(flag), "{err}");
        }
    }
}
