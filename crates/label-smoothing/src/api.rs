//! [`LabelSmoothingLoss`]'s validation and its three calls, [`loss`](LabelSmoothingLoss::loss),
//! [`loss_and_grad`](LabelSmoothingLoss::loss_and_grad) and
//! [`loss_and_grad_in_place`](LabelSmoothingLoss::loss_and_grad_in_place).

use crate::checks::{check_grad_output, check_hard_targets, check_len, check_logits, check_soft_targets_of};
use crate::config::LabelSmoothingConfig;
use crate::driver;
use crate::element::Element;
use crate::error::Result;
use crate::kernel::CallBuffers;
use crate::loss::LabelSmoothingLoss;
use crate::types::{GradOutput, Loss, LossReport, Targets};

impl LabelSmoothingLoss {
    /// The loss alone (evaluation): reads the logits once.
    ///
    /// `logits`: `[N, K]` row-major. `targets`: labels `[N]` or soft targets `[N, K]`.
    /// Returns a scalar, or `[N]` values for reduction `none`.
    pub fn loss<E: Element>(&self, logits: &[E], targets: Targets<'_>) -> Result<Loss> {
        let n = self.check(logits.len(), targets, GradOutput::ONE, None)?;
        Ok(self
            .run(n, targets, GradOutput::ONE, CallBuffers::Read(logits), false)?
            .loss)
    }

    /// The loss and its gradient with respect to the logits, written into `grad` (`[N, K]`, fully overwritten,
    /// in the logits' type).
    ///
    /// `grad_output` is the upstream gradient ([`GradOutput::ONE`] when this loss is the objective).
    pub fn loss_and_grad<E: Element>(
        &self,
        logits: &[E],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        grad: &mut [E],
    ) -> Result<Loss> {
        let n = self.check(logits.len(), targets, grad_output, Some(grad.len()))?;
        Ok(self
            .run(n, targets, grad_output, CallBuffers::Write(logits, grad), false)?
            .loss)
    }

    /// The loss, with the gradient written over the logits (no second `[N, K]` buffer).
    ///
    /// Everything is validated before the first write: on an error the logits are untouched.
    pub fn loss_and_grad_in_place<E: Element>(
        &self,
        logits: &mut [E],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
    ) -> Result<Loss> {
        let n = self.check(logits.len(), targets, grad_output, None)?;
        Ok(self
            .run(n, targets, grad_output, CallBuffers::InPlace(logits), false)?
            .loss)
    }

    /// [`loss`](Self::loss) with the z-loss term on its own and, when `predictions` is set, each row's predicted
    /// class (its arg-max, read in an extra pass over the row) and the token accuracy: a [`LossReport`].
    ///
    /// ```
    /// use label_smoothing::{LabelSmoothingConfig, Targets};
    /// let loss_fn = LabelSmoothingConfig::pytorch(0.1).with_ignore_index(Some(-100)).init(3)?;
    /// let logits = [2.0f32, 0.5, -1.0, /* row 2 */ 0.0, 1.0, 3.0, /* row 3 */ 1.0, 0.0, 0.0];
    /// let out = loss_fn.report(&logits, Targets::Labels(&[0, 1, -100]), true)?;
    /// assert_eq!(out.predicted.as_deref(), Some(&[0, 2, -1][..]));
    /// assert_eq!(out.accuracy.unwrap().value(), 0.5);
    /// # Ok::<(), label_smoothing::LossError>(())
    /// ```
    pub fn report<E: Element>(&self, logits: &[E], targets: Targets<'_>, predictions: bool) -> Result<LossReport> {
        let n = self.check(logits.len(), targets, GradOutput::ONE, None)?;
        self.run(n, targets, GradOutput::ONE, CallBuffers::Read(logits), predictions)
    }

    /// [`loss_and_grad`](Self::loss_and_grad) with the [`LossReport`] of [`report`](Self::report).
    pub fn report_and_grad<E: Element>(
        &self,
        logits: &[E],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        grad: &mut [E],
        predictions: bool,
    ) -> Result<LossReport> {
        let n = self.check(logits.len(), targets, grad_output, Some(grad.len()))?;
        self.run(n, targets, grad_output, CallBuffers::Write(logits, grad), predictions)
    }

    /// [`loss_and_grad_in_place`](Self::loss_and_grad_in_place) with the [`LossReport`] of [`report`](Self::report)
    /// (the predictions are read before the gradient overwrites the logits).
    pub fn report_and_grad_in_place<E: Element>(
        &self,
        logits: &mut [E],
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        predictions: bool,
    ) -> Result<LossReport> {
        let n = self.check(logits.len(), targets, grad_output, None)?;
        self.run(n, targets, grad_output, CallBuffers::InPlace(logits), predictions)
    }

    /// Checks logits of `logits_len` elements and `targets` against the configuration without computing
    /// anything; returns `N`. The same checks run inside every loss call; adapters whose tensors live on
    /// other devices use this to report a typed error before composing the loss themselves.
    pub fn validate(&self, logits_len: usize, targets: Targets<'_>) -> Result<usize> {
        self.check(logits_len, targets, GradOutput::ONE, None)
    }

    /// Validates every input against the configuration; returns `N`.
    fn check(
        &self,
        logits_len: usize,
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        grad_len: Option<usize>,
    ) -> Result<usize> {
        let (k, config) = (self.k, &self.config);
        let n = check_logits(logits_len, k)?;
        match targets {
            Targets::Labels(labels) => check_hard_targets(config, labels, n, k)?,
            Targets::Soft(t) => check_soft_targets_of(config, t.len(), t.iter().map(|&x| x as f64), n, k)?,
        }
        check_grad_output(self.config.reduction, grad_output, n)?;
        if let Some(len) = grad_len {
            check_len("grad", len, n * k, || format!("{} ([{n}, {k}] like the logits)", n * k))?;
        }
        Ok(n)
    }

    /// Computes a validated call through its element type's one compiled instance ([`driver::run`]).
    #[inline(always)]
    fn run<E: Element>(
        &self,
        n: usize,
        targets: Targets<'_>,
        grad_output: GradOutput<'_>,
        out: CallBuffers<'_, E>,
        predictions: bool,
    ) -> Result<LossReport> {
        let call = driver::Call {
            n,
            targets,
            grad_output,
            predictions,
        };
        driver::run(self, call, out)
    }
}

impl LabelSmoothingConfig {
    /// Validates the configuration for `num_classes` classes and returns the loss.
    ///
    /// Errors: [`LossError::TooFewClasses`](crate::LossError::TooFewClasses) for `K < 2`, [`LossError::InvalidSmoothing`](crate::LossError::InvalidSmoothing) /
    /// [`LossError::InvalidAlpha`](crate::LossError::InvalidAlpha) outside `[0, 1]`, [`LossError::Length`](crate::LossError::Length) for weights of the wrong length,
    /// [`LossError::InvalidWeight`](crate::LossError::InvalidWeight) for a negative or non-finite weight.
    pub fn init(self, num_classes: usize) -> Result<LabelSmoothingLoss> {
        self.check(num_classes)?;
        Ok(LabelSmoothingLoss::from_validated(self, num_classes))
    }
}
