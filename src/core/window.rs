//! The last few seconds on the node's clock: samples kept for a window, for the rates,
//! percentiles and maxima that /diagnostics reports.

use std::collections::{BTreeMap, VecDeque};

/// Beyond this many samples the oldest go first, whatever their age: a flood of messages
/// costs bounded memory.
const MAX_SAMPLES: usize = 100_000;

/// Samples `(time, value)` of the last `span` nanoseconds.
#[derive(Debug, Clone)]
pub struct Window {
    span: i64,
    samples: VecDeque<(i64, f64)>,
}

impl Window {
    pub fn new(span_ns: i64) -> Self {
        Window { span: span_ns.max(1), samples: VecDeque::new() }
    }

    /// A sample at `t`. A time before the newest sample (a clock that jumped back, as a
    /// looping bag in sim time) starts the window afresh.
    pub fn push(&mut self, t: i64, value: f64) {
        if self.samples.back().is_some_and(|(last, _)| t < *last) {
            self.samples.clear();
        }
        self.samples.push_back((t, value));
        if self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// Drops what is older than the window ending at `now`.
    fn evict(&mut self, now: i64) {
        if self.samples.back().is_some_and(|(last, _)| now < *last) {
            self.samples.clear();
        }
        while self.samples.front().is_some_and(|(t, _)| *t <= now - self.span) {
            self.samples.pop_front();
        }
    }

    /// How many samples the window ending at `now` holds.
    pub fn count(&mut self, now: i64) -> usize {
        self.evict(now);
        self.samples.len()
    }

    /// Samples per second in the window ending at `now`: between the first and the last
    /// sample (as `ros2 topic hz`), one sample per window if there is one, 0 for none.
    pub fn rate_hz(&mut self, now: i64) -> f64 {
        self.evict(now);
        match (self.samples.front(), self.samples.back()) {
            (Some((first, _)), Some((last, _))) if last > first => (self.samples.len() - 1) as f64 * 1e9 / (last - first) as f64,
            (Some(_), _) => 1e9 / self.span as f64,
            _ => 0.0,
        }
    }

    /// The `q`-quantile (nearest rank, `q` in [0, 1]) of the values in the window ending
    /// at `now`; `None` when it is empty.
    pub fn quantile(&mut self, now: i64, q: f64) -> Option<f64> {
        self.evict(now);
        let mut values: Vec<f64> = self.samples.iter().map(|(_, v)| *v).collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
        Some(values[rank.saturating_sub(1).min(values.len() - 1)])
    }
}

/// The windows /diagnostics reports on: each input's arrivals, the camera sets' stamp
/// spreads, and the policy's forward times.
#[derive(Debug, Clone)]
pub struct Recent {
    span: i64,
    arrivals: BTreeMap<String, Window>,
    /// Newest minus oldest stamp of each camera set, nanoseconds.
    pub spread: Window,
    /// Forward time of each inference, milliseconds.
    pub latency: Window,
}

impl Recent {
    pub fn new(span_ns: i64) -> Self {
        Recent { span: span_ns, arrivals: BTreeMap::new(), spread: Window::new(span_ns), latency: Window::new(span_ns) }
    }

    pub fn span_ns(&self) -> i64 {
        self.span
    }

    /// A message arrived on `topic` at `at`.
    pub fn arrival(&mut self, topic: &str, at: i64) {
        if !self.arrivals.contains_key(topic) {
            self.arrivals.insert(topic.to_owned(), Window::new(self.span));
        }
        if let Some(w) = self.arrivals.get_mut(topic) {
            w.push(at, 0.0);
        }
    }

    /// Messages per second on `topic` over the window ending at `now`.
    pub fn rate_hz(&mut self, topic: &str, now: i64) -> f64 {
        self.arrivals.get_mut(topic).map_or(0.0, |w| w.rate_hz(now))
    }
}

impl Default for Recent {
    /// Five seconds, until the configuration says otherwise.
    fn default() -> Self {
        Recent::new(5_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    /// The plain definition: values with `now - span < t <= now`, sorted, the
    /// ceil(q n)-th.
    fn reference(samples: &[(i64, f64)], span: i64, now: i64, q: f64) -> Option<f64> {
        let mut v: Vec<f64> = samples.iter().filter(|(t, _)| *t > now - span && *t <= now).map(|(_, v)| *v).collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[((q * v.len() as f64).ceil() as usize).max(1) - 1])
    }

    #[test]
    fn quantiles_match_the_plain_definition_over_a_sliding_window() {
        let mut seed = 11u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let span = 500 * MS;
        let mut w = Window::new(span);
        let mut all = Vec::new();
        let mut t = 0;
        for _ in 0..2000 {
            t += (next() * 20.0) as i64 * MS;
            let v = next() * 100.0;
            w.push(t, v);
            all.push((t, v));
            for q in [0.0, 0.5, 0.99, 1.0] {
                assert_eq!(w.quantile(t, q), reference(&all, span, t, q), "t {t} q {q}");
            }
        }
        assert_eq!(w.quantile(t + span, 0.5), None, "everything aged out");
    }

    #[test]
    fn rates_count_arrivals_and_fall_to_zero() {
        let mut r = Recent::new(1000 * MS);
        for k in 0..=30 {
            r.arrival("camera", k * 33 * MS);
        }
        // 30 intervals of 33 ms, the last second of them in the window.
        let rate = r.rate_hz("camera", 990 * MS);
        assert!((rate - 1000.0 / 33.0).abs() < 1e-9, "{rate}");
        assert_eq!(r.rate_hz("camera", 3000 * MS), 0.0);
        assert_eq!(r.rate_hz("never", 0), 0.0);
        r.arrival("once", 10 * MS);
        assert_eq!(r.rate_hz("once", 20 * MS), 1.0, "one arrival in a 1 s window");
    }

    #[test]
    fn a_clock_going_back_starts_afresh() {
        let mut w = Window::new(1000 * MS);
        w.push(500 * MS, 1.0);
        w.push(600 * MS, 2.0);
        w.push(100 * MS, 3.0);
        assert_eq!(w.count(100 * MS), 1);
        assert_eq!(w.quantile(100 * MS, 1.0), Some(3.0));
        assert_eq!(w.count(50 * MS), 0, "evaluated before its newest sample");
    }
}
