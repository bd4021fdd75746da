//! Joint states: matched to the configured joints by name, kept for a short while so that
//! a camera set can be paired with the state nearest its stamp.

use std::collections::VecDeque;

/// Two seconds of joint states at 200 Hz.
const HISTORY: usize = 400;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JointStateError {
    #[error("{names} names but {positions} positions")]
    Lengths { names: usize, positions: usize },
    #[error("missing joint(s) {0:?}")]
    Missing(Vec<String>),
    #[error("joint `{0}` is named more than once")]
    Duplicate(String),
    #[error("non-finite position for joint `{0}`")]
    NonFinite(String),
    #[error("stamp not later than the previous one")]
    StampNotIncreasing,
}

impl JointStateError {
    /// The category, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            JointStateError::Lengths { .. } => "names and positions differ in length",
            JointStateError::Missing(_) => "missing joints",
            JointStateError::Duplicate(_) => "duplicate joint names",
            JointStateError::NonFinite(_) => "non-finite position",
            JointStateError::StampNotIncreasing => "stamp not later than the previous one",
        }
    }
}

#[derive(Debug)]
pub struct JointBuffer {
    names: Vec<String>,
    history: VecDeque<(i64, Vec<f64>)>,
    /// Index in the message of each configured joint, for the last name list seen.
    mapping: Option<(Vec<String>, Vec<usize>)>,
}

impl JointBuffer {
    pub fn new(names: Vec<String>) -> Self {
        JointBuffer { names, history: VecDeque::with_capacity(HISTORY), mapping: None }
    }

    /// Stores a joint state given as parallel name and position arrays (any order, extra
    /// joints ignored, whatever their names and values; a configured joint named twice
    /// is an error).
    pub fn push(&mut self, stamp: i64, names: &[String], positions: &[f64]) -> Result<(), JointStateError> {
        if names.len() != positions.len() {
            return Err(JointStateError::Lengths { names: names.len(), positions: positions.len() });
        }
        if self.history.back().is_some_and(|(last, _)| stamp <= *last) {
            return Err(JointStateError::StampNotIncreasing);
        }
        let fresh = !matches!(&self.mapping, Some((cached, _)) if cached.as_slice() == names);
        if fresh {
            let mut idx = Vec::with_capacity(self.names.len());
            let mut missing = Vec::new();
            for n in &self.names {
                match names.iter().position(|m| m == n) {
                    // Which of two positions is the joint's? Neither is used.
                    Some(i) if names[i + 1..].contains(n) => return Err(JointStateError::Duplicate(n.clone())),
                    Some(i) => idx.push(i),
                    None => missing.push(n.clone()),
                }
            }
            if !missing.is_empty() {
                return Err(JointStateError::Missing(missing));
            }
            self.mapping = Some((names.to_vec(), idx));
        }
        // Either the cached mapping matched these names, or it was just made for them.
        let idx = &self.mapping.as_ref().expect("mapping set above").1;
        let q: Vec<f64> = idx.iter().map(|&i| positions[i]).collect();
        if let Some(j) = q.iter().position(|v| !v.is_finite()) {
            return Err(JointStateError::NonFinite(self.names[j].clone()));
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((stamp, q));
        Ok(())
    }

    /// The stored state nearest `stamp`, if within `tolerance` nanoseconds.
    pub fn nearest(&self, stamp: i64, tolerance: i64) -> Option<&[f64]> {
        // Stamps are increasing: binary search for the first one at or after `stamp`.
        let i = self.history.partition_point(|(s, _)| *s < stamp);
        let candidates = [i.checked_sub(1), Some(i)];
        candidates
            .into_iter()
            .flatten()
            .filter_map(|j| self.history.get(j))
            .min_by_key(|(s, _)| (s - stamp).abs())
            .filter(|(s, _)| (s - stamp).abs() <= tolerance)
            .map(|(_, q)| q.as_slice())
    }

    pub fn latest(&self) -> Option<&[f64]> {
        self.history.back().map(|(_, q)| q.as_slice())
    }

    /// Forgets the history (after a clock jump).
    pub fn clear(&mut self) {
        self.history.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn matches_by_name_not_order() {
        let mut b = JointBuffer::new(s(&["a", "b"]));
        b.push(10, &s(&["x", "b", "a"]), &[9.0, 2.0, 1.0]).unwrap();
        assert_eq!(b.latest().unwrap(), &[1.0, 2.0]);
        b.push(20, &s(&["a", "b"]), &[3.0, 4.0]).unwrap();
        assert_eq!(b.latest().unwrap(), &[3.0, 4.0]);
    }

    #[test]
    fn rejects_bad_states() {
        let mut b = JointBuffer::new(s(&["a", "b"]));
        assert_eq!(b.push(1, &s(&["a"]), &[1.0, 2.0]), Err(JointStateError::Lengths { names: 1, positions: 2 }));
        assert_eq!(b.push(1, &s(&["a", "c"]), &[1.0, 2.0]), Err(JointStateError::Missing(s(&["b"]))));
        assert_eq!(b.push(1, &s(&["a", "b"]), &[1.0, f64::NAN]), Err(JointStateError::NonFinite("b".into())));
        assert_eq!(b.push(1, &s(&["a", "b", "a"]), &[1.0, 2.0, 3.0]), Err(JointStateError::Duplicate("a".into())));
        b.push(5, &s(&["a", "b"]), &[1.0, 2.0]).unwrap();
        assert_eq!(b.push(5, &s(&["a", "b"]), &[1.0, 2.0]), Err(JointStateError::StampNotIncreasing));
        assert_eq!(b.latest().unwrap(), &[1.0, 2.0]);
    }

    #[test]
    fn extra_joints_are_ignored_even_when_repeated_or_not_finite() {
        let mut b = JointBuffer::new(s(&["a", "b"]));
        b.push(1, &s(&["x", "b", "x", "a", "y"]), &[f64::NAN, 2.0, 0.0, 1.0, f64::INFINITY]).unwrap();
        assert_eq!(b.latest().unwrap(), &[1.0, 2.0]);
    }

    #[test]
    fn nearest_within_tolerance() {
        let mut b = JointBuffer::new(s(&["a"]));
        for t in [100, 200, 300] {
            b.push(t, &s(&["a"]), &[t as f64]).unwrap();
        }
        assert_eq!(b.nearest(240, 50), Some(&[200.0][..]));
        assert_eq!(b.nearest(260, 50), Some(&[300.0][..]));
        assert_eq!(b.nearest(360, 50), None);
        assert_eq!(b.nearest(0, 100), Some(&[100.0][..]));
    }
}
