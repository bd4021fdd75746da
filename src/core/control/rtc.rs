//! Real-time chunking's bookkeeping (Black, Galliker and Levine, 2025): the running plan,
//! when the next chunk is to be computed, how long computing one takes, and how strongly
//! each of the running plan's actions is kept in the next. The guided integration itself
//! is `crate::policy::flow`'s.
//!
//! A chunk computed from the inputs of tick `k0` becomes available about `d` ticks later
//! (the inference delay). Its first `d` actions are the running plan's, which execute
//! meanwhile (the frozen prefix); over the rest of the overlap with the running plan it
//! is steered towards it with weights that decay exponentially; beyond, it is free.

use std::collections::VecDeque;

/// Recent inference latencies kept for the delay estimate.
const WINDOW: usize = 20;
/// The delay is this quantile of the recent latencies: a slow inference every now and
/// then must not unfreeze actions that have already run.
const QUANTILE: f64 = 0.95;

/// The soft mask of the paper (eq. 5), for a chunk of `len` actions whose first `delay`
/// are frozen and whose first `overlap` have a running action: 1 for `i < delay`,
/// `c_i (e^c_i - 1) / (e - 1)` with `c_i = (overlap - i) / (overlap - delay + 1)` for
/// `delay <= i < overlap`, 0 beyond.
pub fn weights(delay: usize, overlap: usize, len: usize) -> Vec<f64> {
    let overlap = overlap.min(len);
    (0..len)
        .map(|i| {
            if i < delay.min(overlap) {
                1.0
            } else if i < overlap {
                let c = (overlap - i) as f64 / (overlap - delay + 1) as f64;
                c * c.exp_m1() / (std::f64::consts::E - 1.0)
            } else {
                0.0
            }
        })
        .collect()
}

/// The inference delay in control ticks: fixed, or measured over recent inferences.
#[derive(Debug, Clone)]
pub struct DelayEstimate {
    fixed: Option<usize>,
    recent: VecDeque<usize>,
}

impl DelayEstimate {
    /// `fixed` ticks, or (0) measured.
    pub fn new(fixed: usize) -> Self {
        DelayEstimate { fixed: (fixed > 0).then_some(fixed), recent: VecDeque::with_capacity(WINDOW) }
    }

    /// One inference that took `ticks` control ticks from its inputs to its chunk.
    pub fn record(&mut self, ticks: usize) {
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(ticks);
    }

    /// The delay to plan with: the fixed one, or the 95th percentile of recent ones (0
    /// before the first: the first chunk has no running plan to keep).
    pub fn ticks(&self) -> usize {
        if let Some(d) = self.fixed {
            return d;
        }
        let mut v: Vec<usize> = self.recent.iter().copied().collect();
        v.sort_unstable();
        v.get(((v.len() as f64 - 1.0) * QUANTILE).ceil() as usize).copied().unwrap_or(0)
    }
}

/// What real-time chunking says of a camera set about to be inferred.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The running plan still has more than `execution_horizon` actions: not yet.
    Wait,
    /// Infer now, keeping the running plan's actions for the chunk's ticks (policy
    /// action order, absolute; none before the first chunk or after a hold) for `delay`
    /// ticks exactly and softly over the rest of the overlap.
    Infer { prefix: Vec<Vec<f64>>, delay: usize },
}

/// The running plan: the newest chunk in the policy's actions, absolute, from its first
/// tick.
#[derive(Debug, Clone)]
pub struct Plan {
    execution_horizon: usize,
    delay: DelayEstimate,
    running: Option<(i64, Vec<Vec<f64>>)>,
}

impl Plan {
    pub fn new(execution_horizon: usize, fixed_delay: usize) -> Self {
        Plan { execution_horizon, delay: DelayEstimate::new(fixed_delay), running: None }
    }

    /// Whether (and with what) to infer from inputs of tick `tick`.
    pub fn decide(&self, tick: i64) -> Decision {
        let delay = self.delay.ticks();
        let Some((first, actions)) = &self.running else { return Decision::Infer { prefix: Vec::new(), delay } };
        let from = (tick - first).max(0) as usize;
        let left = actions.len().saturating_sub(from);
        if left > self.execution_horizon {
            return Decision::Wait;
        }
        Decision::Infer { prefix: actions[from.min(actions.len())..].to_vec(), delay: delay.min(left) }
    }

    /// The chunk computed from inputs of tick `first` (policy action order, absolute),
    /// available at tick `now`: its first `delay` actions become the running plan's
    /// (exactly: they executed while it was computed), and it becomes the running plan.
    /// Returns the chunk as it will run.
    pub fn accept(&mut self, first: i64, mut chunk: Vec<Vec<f64>>, delay: usize, now: i64) -> Vec<Vec<f64>> {
        self.delay.record((now - first).max(0) as usize);
        if let Some((f, running)) = &self.running {
            let from = (first - f).max(0) as usize;
            for (new, old) in chunk.iter_mut().zip(running.iter().skip(from)).take(delay) {
                new.clone_from(old);
            }
        }
        self.running = Some((first, chunk.clone()));
        chunk
    }

    /// Forgets the running plan (a hold, a new instruction): the next chunk starts free.
    pub fn reset(&mut self) {
        self.running = None;
    }

    pub fn delay(&self) -> usize {
        self.delay.ticks()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper's weights, written out: W_i = 1 for i < d; c_i (e^c_i - 1)/(e - 1),
    /// c_i = (H - s - i)/(H - s - d + 1) for d <= i < H - s; 0 for i >= H - s.
    fn paper(d: usize, h: usize, s: usize) -> Vec<f64> {
        (0..h)
            .map(|i| match i {
                i if i < d => 1.0,
                i if i < h - s => {
                    let c = (h - s - i) as f64 / (h - s - d + 1) as f64;
                    c * (c.exp() - 1.0) / (std::f64::consts::E - 1.0)
                }
                _ => 0.0,
            })
            .collect()
    }

    #[test]
    fn weights_are_the_papers_soft_mask() {
        for (d, h, s) in [(3, 25, 10), (0, 25, 5), (5, 50, 20), (1, 8, 1)] {
            let w = weights(d, h - s, h);
            let p = paper(d, h, s);
            assert!(w.iter().zip(&p).all(|(a, b)| (a - b).abs() < 1e-12), "{d} {h} {s}: {w:?} {p:?}");
            // Decaying from 1, and 0 where the running plan has no action.
            assert!(w.windows(2).all(|x| x[1] <= x[0]));
            assert!(w[h - s..].iter().all(|x| *x == 0.0));
        }
    }

    #[test]
    fn the_delay_is_a_high_quantile_of_recent_inferences() {
        let mut e = DelayEstimate::new(0);
        assert_eq!(e.ticks(), 0, "cold start");
        for t in [2, 2, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 9] {
            e.record(t);
        }
        assert_eq!(e.ticks(), 9, "the slow one counts");
        for _ in 0..20 {
            e.record(2);
        }
        assert_eq!(e.ticks(), 2, "and is forgotten after the window");
        assert_eq!(DelayEstimate::new(4).ticks(), 4);
    }

    #[test]
    fn inference_waits_for_the_horizon_and_the_prefix_is_frozen_exactly() {
        let mut plan = Plan::new(5, 2);
        let chunk = |v: f64| (0..10).map(|i| vec![v + i as f64]).collect::<Vec<_>>();
        assert_eq!(plan.decide(0), Decision::Infer { prefix: vec![], delay: 2 });
        let first = plan.accept(0, chunk(0.0), 2, 2);
        assert_eq!(first, chunk(0.0), "nothing to keep before the first chunk");
        // 10 actions from tick 0: at tick 4 six are left (more than 5): wait.
        assert_eq!(plan.decide(4), Decision::Wait);
        let Decision::Infer { prefix, delay } = plan.decide(5) else { panic!() };
        assert_eq!((prefix.len(), delay), (5, 2));
        assert_eq!(prefix[0], vec![5.0]);
        let next = plan.accept(5, chunk(100.0), delay, 7);
        assert_eq!(&next[..2], &[vec![5.0], vec![6.0]], "the frozen prefix is the running plan's");
        assert_eq!(next[2], vec![102.0]);
        plan.reset();
        assert_eq!(plan.decide(6), Decision::Infer { prefix: vec![], delay: 2 });
    }
}
