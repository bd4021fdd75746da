//! Turning asynchronous action chunks into one action per control tick.
//!
//! Chunks arrive at the inference rate, ticks happen at the control rate. A chunk's action
//! `k` belongs to tick `first_tick + k`, where `first_tick` is the tick of the inputs it was
//! computed from; actions for ticks already past are skipped. This is ACT's temporal
//! ensembling generalised to inference that does not run once per tick: with one chunk per
//! tick it reduces to ACT exactly.

use std::collections::VecDeque;

use crate::core::config::Smoothing;

/// ACT temporal ensembling: the action for a tick is the mean of every chunk's action for
/// that tick, weighted `exp(-m * i)` where `i = 0` is the oldest chunk. Kept as running
/// weighted sums per future tick, so a chunk costs O(chunk length) and a tick O(1).
#[derive(Debug, Clone)]
pub struct TemporalEnsembler {
    m: f64,
    /// Future ticks in order, without gaps: (tick, weighted sum, total weight, chunks seen).
    slots: VecDeque<(i64, Vec<f64>, f64, u32)>,
    /// First tick not yet executed.
    next_tick: i64,
}

impl TemporalEnsembler {
    pub fn new(m: f64) -> Self {
        TemporalEnsembler { m, slots: VecDeque::new(), next_tick: i64::MIN }
    }

    pub fn add_chunk(&mut self, first_tick: i64, actions: &[Vec<f64>]) {
        for (k, a) in actions.iter().enumerate() {
            let tick = first_tick + k as i64;
            if tick < self.next_tick {
                continue;
            }
            let front = self.slots.front().map(|s| s.0).unwrap_or(tick);
            if tick < front {
                // Earlier than every slot: only possible for the first actions of a chunk
                // that is older than the ones we hold. Fill in slots down to it.
                for t in (tick..front).rev() {
                    self.slots.push_front((t, vec![0.0; a.len()], 0.0, 0));
                }
            }
            let front = self.slots.front().map(|s| s.0).unwrap_or(tick);
            let idx = (tick - front) as usize;
            while self.slots.len() <= idx {
                let t = front + self.slots.len() as i64;
                self.slots.push_back((t, vec![0.0; a.len()], 0.0, 0));
            }
            let slot = &mut self.slots[idx];
            let w = (-self.m * slot.3 as f64).exp();
            for (s, x) in slot.1.iter_mut().zip(a) {
                *s += w * x;
            }
            slot.2 += w;
            slot.3 += 1;
        }
    }

    pub fn action_for(&mut self, tick: i64) -> Option<Vec<f64>> {
        self.next_tick = tick + 1;
        while let Some(front) = self.slots.front() {
            if front.0 > tick {
                return None;
            }
            // The loop's condition: a front slot exists.
            let (t, sum, weight, n) = self.slots.pop_front().expect("a front slot");
            if t == tick && n > 0 {
                return Some(sum.into_iter().map(|s| s / weight).collect());
            }
        }
        None
    }

    pub fn reset(&mut self) {
        self.slots.clear();
    }

    /// The actions `action_for` would give for ticks `from`, `from + 1`, ... if no other
    /// chunk arrived, up to `n` of them, stopping at the first tick without one (the
    /// slots are contiguous, so the k-th slot from `from` is tick `from + k` or none).
    fn planned(&self, from: i64, n: usize) -> Vec<Vec<f64>> {
        self.slots
            .iter()
            .skip_while(|slot| slot.0 < from)
            .take(n)
            .zip(from..)
            .map_while(|((t, sum, weight, count), want)| (*t == want && *count > 0).then(|| sum.iter().map(|s| s / weight).collect()))
            .collect()
    }
}

/// The newest chunk only; what `none` and `exponential` execute.
#[derive(Debug, Clone, Default)]
pub struct NewestChunk {
    first_tick: i64,
    actions: Vec<Vec<f64>>,
}

impl NewestChunk {
    fn action_for(&self, tick: i64) -> Option<&Vec<f64>> {
        let k = tick.checked_sub(self.first_tick)?;
        usize::try_from(k).ok().and_then(|k| self.actions.get(k))
    }

    /// The actions for ticks `from`, `from + 1`, ..., at most `n`.
    fn planned(&self, from: i64, n: usize) -> impl Iterator<Item = &Vec<f64>> {
        (from..).take(n).map_while(|t| self.action_for(t))
    }
}

#[derive(Debug, Clone)]
pub enum Smoother {
    TemporalEnsemble(TemporalEnsembler),
    Exponential { alpha: f64, chunk: NewestChunk, last: Option<Vec<f64>> },
    None(NewestChunk),
}

impl Smoother {
    pub fn new(s: Smoothing) -> Self {
        match s {
            Smoothing::TemporalEnsemble { m } => Smoother::TemporalEnsemble(TemporalEnsembler::new(m)),
            Smoothing::Exponential { alpha } => {
                Smoother::Exponential { alpha, chunk: NewestChunk::default(), last: None }
            }
            Smoothing::None | Smoothing::Rtc { .. } => Smoother::None(NewestChunk::default()),
        }
    }

    pub fn add_chunk(&mut self, first_tick: i64, actions: &[Vec<f64>]) {
        match self {
            Smoother::TemporalEnsemble(e) => e.add_chunk(first_tick, actions),
            Smoother::Exponential { chunk, .. } | Smoother::None(chunk) => {
                *chunk = NewestChunk { first_tick, actions: actions.to_vec() }
            }
        }
    }

    /// The action for `tick`, or `None` when no chunk covers it.
    pub fn action_for(&mut self, tick: i64) -> Option<Vec<f64>> {
        match self {
            Smoother::TemporalEnsemble(e) => e.action_for(tick),
            Smoother::None(chunk) => chunk.action_for(tick).cloned(),
            Smoother::Exponential { alpha, chunk, last } => {
                let x = chunk.action_for(tick)?;
                let y: Vec<f64> = match last {
                    Some(prev) => x.iter().zip(prev.iter()).map(|(x, p)| *alpha * x + (1.0 - *alpha) * p).collect(),
                    None => x.clone(),
                };
                *last = Some(y.clone());
                Some(y)
            }
        }
    }

    /// The actions [`Smoother::action_for`] would give for ticks `from`, `from + 1`, ...
    /// if no other chunk arrived: the smoothed plan ahead, at most `n` actions, ending at
    /// the first tick no chunk covers. Changes nothing.
    pub fn planned(&self, from: i64, n: usize) -> Vec<Vec<f64>> {
        match self {
            Smoother::TemporalEnsemble(e) => e.planned(from, n),
            Smoother::None(chunk) => chunk.planned(from, n).cloned().collect(),
            Smoother::Exponential { alpha, chunk, last } => {
                let mut prev = last.clone();
                chunk
                    .planned(from, n)
                    .map(|x| {
                        let y: Vec<f64> = match &prev {
                            Some(p) => x.iter().zip(p).map(|(x, p)| *alpha * x + (1.0 - *alpha) * p).collect(),
                            None => x.clone(),
                        };
                        prev = Some(y.clone());
                        y
                    })
                    .collect()
            }
        }
    }

    /// Forgets every queued action (and the filter state): after a hold, or when the
    /// instruction changed, nothing computed before may be executed.
    pub fn reset(&mut self) {
        match self {
            Smoother::TemporalEnsemble(e) => e.reset(),
            Smoother::Exponential { chunk, last, .. } => {
                *chunk = NewestChunk::default();
                *last = None;
            }
            Smoother::None(chunk) => *chunk = NewestChunk::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain offline definition: for each tick, every chunk that had arrived by then
    /// and has an action for it, weighted exp(-m * i) in arrival order (i = 0 oldest).
    fn reference(chunks: &[(i64, i64, Vec<Vec<f64>>)], m: f64, tick: i64) -> Option<Vec<f64>> {
        let mut sum: Option<Vec<f64>> = None;
        let mut weight = 0.0;
        let mut i = 0;
        for (arrival, first, actions) in chunks {
            if *arrival > tick || tick < *first || tick >= first + actions.len() as i64 {
                continue;
            }
            let w = (-m * i as f64).exp();
            i += 1;
            let a = &actions[(tick - first) as usize];
            let s = sum.get_or_insert_with(|| vec![0.0; a.len()]);
            for (s, x) in s.iter_mut().zip(a) {
                *s += w * x;
            }
            weight += w;
        }
        sum.map(|s| s.into_iter().map(|x| x / weight).collect())
    }

    fn lcg(seed: &mut u64) -> f64 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn ensembler_matches_the_offline_definition() {
        const TOL: f64 = 1e-12;
        for seed in 0..50u64 {
            let mut s = seed + 1;
            let m = lcg(&mut s) * 0.5;
            let t_len = 5 + (lcg(&mut s) * 20.0) as usize;
            // Chunks computed from inputs of tick `first`, arriving a few ticks later,
            // at irregular intervals (inference slower than control).
            let mut chunks = Vec::new();
            let mut first = 0i64;
            for _ in 0..30 {
                first += 1 + (lcg(&mut s) * 3.0) as i64;
                let arrival = first + (lcg(&mut s) * 3.0) as i64;
                let actions: Vec<Vec<f64>> = (0..t_len).map(|_| (0..3).map(|_| lcg(&mut s) * 2.0 - 1.0).collect()).collect();
                chunks.push((arrival, first, actions));
            }
            chunks.sort_by_key(|c| c.0);
            let mut e = TemporalEnsembler::new(m);
            let mut next = 0;
            for tick in 0..first + t_len as i64 + 2 {
                while next < chunks.len() && chunks[next].0 <= tick {
                    e.add_chunk(chunks[next].1, &chunks[next].2);
                    next += 1;
                }
                let got = e.action_for(tick);
                let want = reference(&chunks, m, tick);
                match (got, want) {
                    (None, None) => {}
                    (Some(g), Some(w)) => {
                        for (g, w) in g.iter().zip(&w) {
                            assert!((g - w).abs() < TOL, "seed {seed} tick {tick}: {g} vs {w}");
                        }
                    }
                    (g, w) => panic!("seed {seed} tick {tick}: {g:?} vs {w:?}"),
                }
            }
        }
    }

    #[test]
    fn one_chunk_per_tick_is_act() {
        // ACT: at step t the chunks from steps t-T+1..=t vote, the oldest with weight 1.
        let m = 0.1;
        let mut e = TemporalEnsembler::new(m);
        let chunk = |t: i64| -> Vec<Vec<f64>> { (0..4).map(|k| vec![(t * 10 + k) as f64]).collect() };
        let mut got = Vec::new();
        for t in 0..6 {
            e.add_chunk(t, &chunk(t));
            got.push(e.action_for(t).unwrap()[0]);
        }
        // Step 5: chunks 2,3,4,5 hold actions 23, 32, 41, 50 for it.
        let w: Vec<f64> = (0..4).map(|i| (-m * i as f64).exp()).collect();
        let expected = (23.0 * w[0] + 32.0 * w[1] + 41.0 * w[2] + 50.0 * w[3]) / w.iter().sum::<f64>();
        assert!((got[5] - expected).abs() < 1e-12);
        assert_eq!(got[0], 0.0);
    }

    #[test]
    fn exponential_and_none_follow_the_newest_chunk() {
        let mut none = Smoother::new(Smoothing::None);
        none.add_chunk(10, &[vec![1.0], vec![2.0]]);
        assert_eq!(none.action_for(9), None);
        assert_eq!(none.action_for(11), Some(vec![2.0]));
        none.add_chunk(11, &[vec![5.0], vec![6.0]]);
        assert_eq!(none.action_for(12), Some(vec![6.0]));
        assert_eq!(none.action_for(13), None); // exhausted

        let mut exp = Smoother::new(Smoothing::Exponential { alpha: 0.25 });
        exp.add_chunk(0, &[vec![4.0], vec![8.0], vec![8.0]]);
        assert_eq!(exp.action_for(0), Some(vec![4.0]));
        assert_eq!(exp.action_for(1), Some(vec![5.0]));
        assert_eq!(exp.action_for(2), Some(vec![5.75]));
        exp.reset();
        assert_eq!(exp.action_for(2), None);
    }

    /// The plan ahead is what the smoother then executes, tick by tick, when no other
    /// chunk arrives: for each smoother, from random points of a random chunk stream.
    #[test]
    fn the_plan_ahead_is_what_gets_executed() {
        for smoothing in [Smoothing::TemporalEnsemble { m: 0.1 }, Smoothing::Exponential { alpha: 0.3 }, Smoothing::None] {
            for seed in 0..30u64 {
                let mut s = seed + 7;
                let mut smoother = Smoother::new(smoothing);
                let mut first = 0i64;
                for tick in 0..60i64 {
                    if lcg(&mut s) < 0.3 {
                        first = tick - (lcg(&mut s) * 3.0) as i64;
                        let len = 3 + (lcg(&mut s) * 10.0) as usize;
                        let chunk: Vec<Vec<f64>> = (0..len).map(|_| vec![lcg(&mut s), lcg(&mut s)]).collect();
                        smoother.add_chunk(first, &chunk);
                    }
                    let n = (lcg(&mut s) * 8.0) as usize;
                    let plan = smoother.planned(tick, n);
                    let mut ahead = smoother.clone();
                    let executed: Vec<Vec<f64>> = (tick..tick + n as i64).map_while(|t| ahead.action_for(t)).collect();
                    assert_eq!(plan, executed, "{smoothing:?} seed {seed} tick {tick} (chunk from {first})");
                    smoother.action_for(tick);
                }
            }
        }
    }

    #[test]
    fn reset_discards_queued_actions() {
        let mut s = Smoother::new(Smoothing::TemporalEnsemble { m: 0.0 });
        s.add_chunk(0, &[vec![1.0], vec![1.0], vec![1.0]]);
        assert!(s.action_for(0).is_some());
        s.reset();
        assert_eq!(s.action_for(1), None);
        s.add_chunk(2, &[vec![3.0]]);
        assert_eq!(s.action_for(2), Some(vec![3.0]));
    }
}
