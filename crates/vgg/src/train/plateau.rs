//! The paper's schedule (Section 3.1): divide the learning rate by 10 when validation accuracy
//! stops improving; burn has no plateau scheduler, so here is one.

use serde::{Deserialize, Serialize};

/// Reduce-on-plateau on a metric to maximise (validation top-1 accuracy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub lr: f64,
    /// Multiply by this at each reduction (0.1 in the paper).
    pub factor: f64,
    /// Epochs without improvement before a reduction.
    pub patience: usize,
    /// Reductions allowed in all (3 in the paper); after the last one training stops at the
    /// next plateau.
    pub max_reductions: usize,
    /// Smallest gain that counts as an improvement.
    pub min_delta: f64,
    pub best: Option<f64>,
    pub bad_epochs: usize,
    pub reductions: usize,
}

/// What the scheduler decided after an epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Improved,
    Wait,
    Reduced {
        lr: f64,
    },
    /// A plateau after the last allowed reduction: the paper stops here.
    Stop,
}

impl Plateau {
    pub fn new(lr: f64, factor: f64, patience: usize, max_reductions: usize) -> Self {
        Self {
            lr,
            factor,
            patience,
            max_reductions,
            min_delta: 1e-4,
            best: None,
            bad_epochs: 0,
            reductions: 0,
        }
    }

    /// Records an epoch's validation accuracy.
    pub fn observe(&mut self, accuracy: f64) -> Decision {
        if self
            .best
            .is_none_or(|best| accuracy > best + self.min_delta)
        {
            self.best = Some(accuracy);
            self.bad_epochs = 0;
            return Decision::Improved;
        }
        self.bad_epochs += 1;
        if self.bad_epochs < self.patience {
            return Decision::Wait;
        }
        self.bad_epochs = 0;
        if self.reductions >= self.max_reductions {
            return Decision::Stop;
        }
        self.reductions += 1;
        self.lr *= self.factor;
        Decision::Reduced { lr: self.lr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divides_by_ten_after_patience_then_stops() {
        let mut p = Plateau::new(0.01, 0.1, 2, 1);
        assert_eq!(p.observe(0.5), Decision::Improved);
        assert_eq!(p.observe(0.6), Decision::Improved);
        assert_eq!(p.observe(0.6), Decision::Wait);
        assert!(matches!(p.observe(0.59), Decision::Reduced { lr } if (lr - 0.001).abs() < 1e-12));
        assert_eq!(p.observe(0.7), Decision::Improved);
        assert_eq!(p.observe(0.7), Decision::Wait);
        assert_eq!(p.observe(0.7), Decision::Stop);
    }
}
