//! The last gate before a command leaves the node: finite values only, each joint within
//! its position limits, and no joint moving more than its maximum step per control tick.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SafetyError {
    #[error("non-finite target for joint {joint}: {value}")]
    NonFinite { joint: usize, value: f64 },
    #[error("target has {got} values, {expected} joints are configured")]
    Length { got: usize, expected: usize },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clipped {
    /// Joints whose target lay outside their limits.
    pub by_limit: usize,
    /// Joints whose step was cut to the maximum.
    pub by_step: usize,
}

#[derive(Debug, Clone)]
pub struct SafetyFilter {
    lower: Vec<f64>,
    upper: Vec<f64>,
    max_step: Vec<f64>,
}

impl SafetyFilter {
    pub fn new(lower: Vec<f64>, upper: Vec<f64>, max_step: Vec<f64>) -> Self {
        // Config::validate checks one value per joint in each list.
        assert!(lower.len() == upper.len() && upper.len() == max_step.len());
        SafetyFilter { lower, upper, max_step }
    }

    /// The command to send for `target`, given the previous command. The step limit
    /// applies first and the position limits last, so that the limits hold even if the
    /// previous command was outside them (the limits were tightened at run time).
    /// A non-finite target is refused whole: the caller holds.
    pub fn apply(&self, target: &[f64], previous: &[f64]) -> Result<(Vec<f64>, Clipped), SafetyError> {
        let n = self.lower.len();
        if target.len() != n || previous.len() != n {
            return Err(SafetyError::Length { got: target.len().min(previous.len()), expected: n });
        }
        if let Some((joint, &value)) = target.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SafetyError::NonFinite { joint, value });
        }
        let mut clipped = Clipped::default();
        let out = (0..n)
            .map(|i| {
                let limited = target[i].clamp(self.lower[i], self.upper[i]);
                if limited != target[i] {
                    clipped.by_limit += 1;
                }
                let p = if previous[i].is_finite() { previous[i] } else { limited };
                let stepped = limited.clamp(p - self.max_step[i], p + self.max_step[i]);
                if stepped != limited {
                    clipped.by_step += 1;
                }
                stepped.clamp(self.lower[i], self.upper[i])
            })
            .collect();
        Ok((out, clipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> SafetyFilter {
        SafetyFilter::new(vec![-1.0, 0.0], vec![1.0, 2.0], vec![0.1, 0.5])
    }

    #[test]
    fn clamps_to_limits_then_step() {
        let f = filter();
        let (out, c) = f.apply(&[5.0, 1.2], &[0.95, 1.0]).unwrap();
        assert_eq!(out, vec![1.0, 1.2]);
        assert_eq!(c, Clipped { by_limit: 1, by_step: 0 });
        let (out, c) = f.apply(&[-1.0, 2.0], &[0.0, 1.0]).unwrap();
        assert_eq!(out, vec![-0.1, 1.5]);
        assert_eq!(c, Clipped { by_limit: 0, by_step: 2 });
    }

    #[test]
    fn refuses_non_finite_targets() {
        let f = filter();
        assert!(matches!(f.apply(&[0.0, f64::NAN], &[0.0, 1.0]), Err(SafetyError::NonFinite { joint: 1, .. })));
        assert!(matches!(f.apply(&[f64::INFINITY, 0.0], &[0.0, 1.0]), Err(SafetyError::NonFinite { joint: 0, .. })));
        assert!(matches!(f.apply(&[0.0], &[0.0, 1.0]), Err(SafetyError::Length { .. })));
    }

    #[test]
    fn limits_win_over_a_previous_command_outside_them() {
        let f = filter();
        let (out, _) = f.apply(&[3.0, 1.0], &[1.5, 1.0]).unwrap();
        assert_eq!(out, vec![1.0, 1.0]);
    }
}
