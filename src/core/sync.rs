//! ApproximateTime synchronization of N topics, with the semantics of ROS message_filters'
//! `ApproximateTime` policy (the algorithm of approximate_time.h, ported): each message is
//! used at most once, sets never cross, a set is published as soon as it is proven to have
//! the smallest span among the sets that could contain its pivot (the latest of the first
//! messages), queues are bounded and a set's span never exceeds `max_interval`.
//!
//! Unlike message_filters it never drops a message silently: every message that leaves
//! the synchronizer does so in a published set or in [`SyncOutput::dropped`] with a reason.
//! Time is an input: stamps are the messages' own (nanoseconds), no clock is read.

use std::collections::VecDeque;

/// Why the synchronizer let go of a message without using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyncDrop {
    /// A better-matching message of the same topic was used instead.
    Unmatched,
    /// No message of some other topic lies within `max_interval` of it.
    NoMatchWithinInterval,
    /// Its topic's queue was full.
    QueueFull,
    /// Its stamp is not later than the previous message's on the same topic.
    StampNotIncreasing,
}

impl SyncDrop {
    pub fn reason(self) -> &'static str {
        match self {
            SyncDrop::Unmatched => "sync: a closer message was used",
            SyncDrop::NoMatchWithinInterval => "sync: no match within sync_max_interval_s",
            SyncDrop::QueueFull => "sync: queue full",
            SyncDrop::StampNotIncreasing => "stamp not later than the previous one",
        }
    }
}

/// What one `add` produced.
#[derive(Debug)]
pub struct SyncOutput<T> {
    /// Complete sets, one message per topic in topic order, oldest set first.
    pub sets: Vec<Vec<(i64, T)>>,
    pub dropped: Vec<(usize, i64, T, SyncDrop)>,
}

impl<T> Default for SyncOutput<T> {
    fn default() -> Self {
        SyncOutput { sets: Vec::new(), dropped: Vec::new() }
    }
}

struct Topic<T> {
    deque: VecDeque<(i64, T)>,
    /// Messages moved out of the deque while searching for the best set for the pivot.
    past: Vec<(i64, T)>,
    has_dropped_messages: bool,
    last_stamp: Option<i64>,
}

pub struct ApproximateTimeSync<T> {
    topics: Vec<Topic<T>>,
    queue_size: usize,
    max_interval: i64,
    age_penalty: f64,
    /// No two messages of one topic are closer than this (message_filters'
    /// inter_message_lower_bound, the same for every topic): lets a set be proven
    /// optimal without waiting for the next message of every topic.
    inter_message_lower_bound: i64,
    num_non_empty: usize,
    /// Index of the pivot topic and the candidate: its stamps and, per topic, how many
    /// messages were in `past` when it was made (the candidate is the front of the deque
    /// at that time, so after recovering `past` it is the front again).
    pivot: Option<usize>,
    pivot_time: i64,
    candidate_start: i64,
    candidate_end: i64,
}

impl<T> ApproximateTimeSync<T> {
    /// `max_interval` in nanoseconds; `age_penalty` as in message_filters (default 0.1).
    /// With one topic every message is a set of its own, at once. A queue of 0 is taken
    /// as 1 (the configuration allows no less).
    pub fn new(num_topics: usize, queue_size: usize, max_interval: i64, age_penalty: f64) -> Self {
        let queue_size = queue_size.max(1);
        ApproximateTimeSync {
            topics: (0..num_topics)
                .map(|_| Topic {
                    deque: VecDeque::new(),
                    past: Vec::new(),
                    has_dropped_messages: false,
                    last_stamp: None,
                })
                .collect(),
            queue_size,
            max_interval,
            age_penalty,
            inter_message_lower_bound: 0,
            num_non_empty: 0,
            pivot: None,
            pivot_time: 0,
            candidate_start: 0,
            candidate_end: 0,
        }
    }

    /// Sets message_filters' inter-message lower bound (0 by default, as there): the
    /// least time between two messages of a topic, in nanoseconds.
    pub fn with_inter_message_lower_bound(mut self, bound: i64) -> Self {
        self.inter_message_lower_bound = bound.max(0);
        self
    }

    /// Messages waiting in the synchronizer.
    pub fn pending(&self) -> usize {
        self.topics.iter().map(|t| t.deque.len() + t.past.len()).sum()
    }

    /// Forgets every queued message (returned as dropped with `reason`), e.g. after a
    /// clock jump made their stamps meaningless.
    pub fn clear(&mut self) -> Vec<(usize, i64, T)> {
        let mut out = Vec::new();
        for (i, t) in self.topics.iter_mut().enumerate() {
            out.extend(t.past.drain(..).map(|(s, m)| (i, s, m)));
            out.extend(t.deque.drain(..).map(|(s, m)| (i, s, m)));
            t.has_dropped_messages = false;
            t.last_stamp = None;
        }
        self.num_non_empty = 0;
        self.pivot = None;
        out
    }

    pub fn add(&mut self, topic: usize, stamp: i64, msg: T) -> SyncOutput<T> {
        let mut out = SyncOutput::default();
        let single = self.topics.len() == 1;
        let t = &mut self.topics[topic];
        if t.last_stamp.is_some_and(|last| stamp <= last) {
            out.dropped.push((topic, stamp, msg, SyncDrop::StampNotIncreasing));
            return out;
        }
        t.last_stamp = Some(stamp);
        if single {
            out.sets.push(vec![(stamp, msg)]);
            return out;
        }
        t.deque.push_back((stamp, msg));
        if t.deque.len() == 1 {
            self.num_non_empty += 1;
            if self.num_non_empty == self.topics.len() {
                self.process(&mut out);
            }
        }
        let t = &self.topics[topic];
        if t.deque.len() + t.past.len() > self.queue_size {
            // Cancel the ongoing candidate search, if any, and drop the oldest message of
            // the offending topic.
            self.recover_all();
            let t = &mut self.topics[topic];
            // recover_all put every moved message back: the deque holds the whole queue,
            // more than queue_size >= 1 messages.
            let (s, m) = t.deque.pop_front().expect("a full queue is not empty");
            out.dropped.push((topic, s, m, SyncDrop::QueueFull));
            t.has_dropped_messages = true;
            if t.deque.is_empty() {
                self.num_non_empty -= 1;
            }
            if self.pivot.is_some() {
                self.pivot = None;
                self.process(&mut out);
            }
        }
        out
    }

    /// Called only while every deque is non-empty (`num_non_empty == n`).
    fn front_time(&self, i: usize) -> i64 {
        self.topics[i].deque.front().expect("non-empty deque").0
    }

    /// (index, time) of the latest and of the earliest of the topics' times; ties go to
    /// the lowest topic index, as in message_filters.
    fn bounds(&self, time: impl Fn(usize) -> i64) -> ((usize, i64), (usize, i64)) {
        let mut end = (0, time(0));
        let mut start = end;
        for i in 1..self.topics.len() {
            let ti = time(i);
            if ti > end.1 {
                end = (i, ti);
            }
            if ti < start.1 {
                start = (i, ti);
            }
        }
        (end, start)
    }

    /// Bounds of the front messages.
    fn candidate_bounds(&self) -> ((usize, i64), (usize, i64)) {
        self.bounds(|i| self.front_time(i))
    }

    /// Like `candidate_bounds` while some deques are empty: an empty deque's next message
    /// cannot be earlier than the pivot (all its earlier ones were moved past it), nor
    /// closer to its last one than the inter-message lower bound.
    fn virtual_bounds(&self) -> ((usize, i64), (usize, i64)) {
        self.bounds(|i| {
            let t = &self.topics[i];
            match t.deque.front() {
                Some((s, _)) => *s,
                None => {
                    // Only called during a candidate search, which moved every message
                    // of an emptied deque to `past`.
                    let last = t.past.last().expect("a candidate exists").0;
                    last.saturating_add(self.inter_message_lower_bound).max(self.pivot_time)
                }
            }
        })
    }

    fn make_candidate(&mut self, out: &mut SyncOutput<T>) {
        // Messages moved past before this candidate can never be used: a better set
        // than theirs was found.
        for (i, t) in self.topics.iter_mut().enumerate() {
            out.dropped.extend(t.past.drain(..).map(|(s, m)| (i, s, m, SyncDrop::Unmatched)));
        }
    }

    /// Callers pass a start topic whose deque is not empty: in `process` none is, and in
    /// `virtual_search` an empty deque's virtual time is at least the pivot time, while a
    /// start at the pivot time returns before the move (its comparison is the very one
    /// that just failed to publish).
    fn move_front_to_past(&mut self, i: usize) {
        let t = &mut self.topics[i];
        let m = t.deque.pop_front().expect("non-empty deque");
        t.past.push(m);
        if t.deque.is_empty() {
            self.num_non_empty -= 1;
        }
    }

    /// Called with the start topic of the front messages, all deques non-empty.
    fn delete_front(&mut self, i: usize, reason: SyncDrop, out: &mut SyncOutput<T>) {
        let t = &mut self.topics[i];
        let (s, m) = t.deque.pop_front().expect("non-empty deque");
        out.dropped.push((i, s, m, reason));
        if t.deque.is_empty() {
            self.num_non_empty -= 1;
        }
    }

    /// Moves back the last `n` messages of topic `i`'s past to the front of its deque.
    fn recover(&mut self, i: usize, n: usize) {
        let t = &mut self.topics[i];
        for _ in 0..n {
            // `n` counts messages moved to `past` and not yet recovered.
            let m = t.past.pop().expect("recovering a moved message");
            t.deque.push_front(m);
        }
    }

    fn recount(&mut self) {
        self.num_non_empty = self.topics.iter().filter(|t| !t.deque.is_empty()).count();
    }

    fn recover_all(&mut self) {
        for i in 0..self.topics.len() {
            let n = self.topics[i].past.len();
            self.recover(i, n);
        }
        self.recount();
    }

    fn publish_candidate(&mut self, out: &mut SyncOutput<T>) {
        self.pivot = None;
        let mut set = Vec::with_capacity(self.topics.len());
        for i in 0..self.topics.len() {
            let n = self.topics[i].past.len();
            self.recover(i, n);
            // The candidate's message of each topic is the front once `past` is recovered.
            set.push(self.topics[i].deque.pop_front().expect("candidate message"));
        }
        self.recount();
        out.sets.push(set);
    }

    fn not_better(&self, end: i64, start: i64) -> bool {
        (end - self.candidate_end) as f64 * (1.0 + self.age_penalty) >= (start - self.candidate_start) as f64
    }

    fn process(&mut self, out: &mut SyncOutput<T>) {
        let n = self.topics.len();
        while self.num_non_empty == n {
            let ((end_index, end_time), (start_index, start_time)) = self.candidate_bounds();
            for (i, t) in self.topics.iter_mut().enumerate() {
                if i != end_index {
                    // No dropped message could have been better to use than the ones we
                    // have, so this topic may be a pivot again.
                    t.has_dropped_messages = false;
                }
            }
            if self.pivot.is_none() {
                if end_time - start_time > self.max_interval {
                    self.delete_front(start_index, SyncDrop::NoMatchWithinInterval, out);
                    continue;
                }
                if self.topics[end_index].has_dropped_messages {
                    // A dropped message before the end might have made a better set.
                    self.delete_front(start_index, SyncDrop::Unmatched, out);
                    continue;
                }
                self.make_candidate(out);
                self.candidate_start = start_time;
                self.candidate_end = end_time;
                self.pivot = Some(end_index);
                self.pivot_time = end_time;
                self.move_front_to_past(start_index);
            } else {
                if !self.not_better(end_time, start_time) {
                    self.make_candidate(out);
                    self.candidate_start = start_time;
                    self.candidate_end = end_time;
                }
                self.move_front_to_past(start_index);
            }
            if Some(start_index) == self.pivot {
                // Every set holding the pivot has been looked at.
                self.publish_candidate(out);
            } else if self.not_better(end_time, self.pivot_time) {
                // Any later set holds [pivot_time, end_time], already wider than ours.
                self.publish_candidate(out);
            } else if self.num_non_empty < n {
                self.virtual_search(out);
            }
        }
    }

    /// With some deques empty, assume their next messages come as early as possible and
    /// see whether the candidate is proven optimal anyway.
    fn virtual_search(&mut self, out: &mut SyncOutput<T>) {
        let n = self.topics.len();
        let mut moves = vec![0usize; n];
        loop {
            let ((_, end_time), (start_index, start_time)) = self.virtual_bounds();
            if self.not_better(end_time, self.pivot_time) {
                self.publish_candidate(out);
                return;
            }
            if !self.not_better(end_time, start_time) {
                // An optimistic set would beat the candidate: wait for more messages.
                for (i, m) in moves.iter().enumerate() {
                    self.recover(i, *m);
                }
                self.recount();
                return;
            }
            debug_assert!(Some(start_index) != self.pivot);
            self.move_front_to_past(start_index);
            moves[start_index] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain offline reference: with every message known up front, repeatedly take
    /// the pivot (the latest first message), sweep the earliest message forward while it
    /// is not the pivot, and keep the best set met (ties to the earlier one).
    fn reference(streams: &[Vec<i64>], max_interval: i64, age_penalty: f64) -> Vec<Vec<i64>> {
        let n = streams.len();
        let mut heads = vec![0usize; n];
        let mut sets = Vec::new();
        let not_better = |end: i64, start: i64, cand: (i64, i64)| {
            (end - cand.1) as f64 * (1.0 + age_penalty) >= (start - cand.0) as f64
        };
        'outer: loop {
            if (0..n).any(|i| heads[i] >= streams[i].len()) {
                break;
            }
            let stamps = |p: &[usize]| -> Vec<i64> { (0..n).map(|i| streams[i][p[i]]).collect() };
            let bounds = |s: &[i64]| {
                let mut end = (0, s[0]);
                let mut start = (0, s[0]);
                for (i, &t) in s.iter().enumerate().skip(1) {
                    if t > end.1 { end = (i, t); }
                    if t < start.1 { start = (i, t); }
                }
                (end, start)
            };
            let s = stamps(&heads);
            let ((pivot, pivot_time), (start_i, start_t)) = bounds(&s);
            if pivot_time - start_t > max_interval {
                heads[start_i] += 1;
                continue;
            }
            let mut best = (heads.clone(), (start_t, pivot_time));
            let mut p = heads.clone();
            loop {
                let s = stamps(&p);
                let ((_, end_t), (start_i, start_t)) = bounds(&s);
                if !not_better(end_t, start_t, best.1) {
                    best = (p.clone(), (start_t, end_t));
                }
                if start_i == pivot {
                    break;
                }
                p[start_i] += 1;
                if p[start_i] >= streams[start_i].len() {
                    break 'outer; // the online version would still be waiting
                }
            }
            sets.push(stamps(&best.0));
            heads = best.0.iter().map(|i| i + 1).collect();
        }
        sets
    }

    /// Tiny deterministic generator so that the tests need no crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Three camera-like streams at ~30 Hz with jitter and gaps, delivered in an order
    /// perturbed by transport delays.
    fn scenario(seed: u64) -> (Vec<Vec<i64>>, Vec<(usize, i64)>) {
        let mut rng = Lcg(seed);
        let ms = 1_000_000i64;
        let mut streams = vec![Vec::new(); 3];
        for (k, s) in streams.iter_mut().enumerate() {
            let mut t = (k as i64) * 3 * ms;
            for _ in 0..60 {
                t += 33 * ms + (rng.below(17) as i64 - 8) * ms;
                if rng.below(10) == 0 {
                    continue; // a lost frame
                }
                s.push(t);
            }
        }
        let mut arrivals: Vec<(i64, usize, i64)> = Vec::new();
        for (k, s) in streams.iter().enumerate() {
            let mut last_arrival = 0;
            for &t in s {
                // Per-topic delivery stays in order; across topics it varies.
                let a = (t + rng.below(40) as i64 * ms).max(last_arrival + 1);
                last_arrival = a;
                arrivals.push((a, k, t));
            }
        }
        arrivals.sort();
        (streams, arrivals.into_iter().map(|(_, k, t)| (k, t)).collect())
    }

    /// Sets (stamps by topic), dropped messages (topic, stamp, why) and messages pending.
    type Outcome = (Vec<Vec<i64>>, Vec<(usize, i64, SyncDrop)>, usize);

    fn run(arrivals: &[(usize, i64)], n: usize, queue: usize, max_interval: i64, ap: f64) -> Outcome {
        run_bounded(arrivals, n, queue, max_interval, ap, 0)
    }

    fn run_bounded(arrivals: &[(usize, i64)], n: usize, queue: usize, max_interval: i64, ap: f64, bound: i64) -> Outcome {
        let mut sync = ApproximateTimeSync::new(n, queue, max_interval, ap).with_inter_message_lower_bound(bound);
        let mut sets = Vec::new();
        let mut dropped = Vec::new();
        for &(k, t) in arrivals {
            let out = sync.add(k, t, t);
            for s in out.sets {
                for (stamp, msg) in &s {
                    assert_eq!(stamp, msg);
                }
                sets.push(s.into_iter().map(|(s, _)| s).collect());
            }
            dropped.extend(out.dropped.into_iter().map(|(k, s, _, r)| (k, s, r)));
        }
        (sets, dropped, sync.pending())
    }

    #[test]
    fn matches_the_offline_reference() {
        let ms = 1_000_000;
        for seed in 0..200 {
            let (streams, arrivals) = scenario(seed);
            for &(max_interval, ap) in &[(i64::MAX / 4, 0.0), (20 * ms, 0.1), (8 * ms, 0.1), (15 * ms, 0.0)] {
                let (sets, dropped, pending) = run(&arrivals, 3, 1000, max_interval, ap);
                let expected = reference(&streams, max_interval, ap);
                // Where the reference stops because a stream ended, the online version may
                // already have proven one more set optimal.
                assert!(sets.len() >= expected.len() && sets.len() <= expected.len() + 1,
                    "seed {seed}: {} sets online, {} in the reference", sets.len(), expected.len());
                assert_eq!(sets[..expected.len()], expected[..], "seed {seed} max_interval {max_interval}");
                // Accounting: every message is in a set, dropped or still pending.
                let total: usize = streams.iter().map(|s| s.len()).sum();
                assert_eq!(sets.len() * 3 + dropped.len() + pending, total, "seed {seed}");
            }
        }
    }

    #[test]
    fn a_true_inter_message_bound_changes_when_sets_come_not_which() {
        // The scenario's frames are at least 33 - 16 = 17 ms apart: a 15 ms bound holds.
        let ms = 1_000_000;
        for seed in 0..100 {
            let (streams, arrivals) = scenario(seed);
            let (sets, _, _) = run_bounded(&arrivals, 3, 1000, 20 * ms, 0.1, 15 * ms);
            let expected = reference(&streams, 20 * ms, 0.1);
            assert!(sets.len() >= expected.len() && sets.len() <= expected.len() + 1, "seed {seed}");
            assert_eq!(sets[..expected.len()], expected[..], "seed {seed}");
        }
    }

    #[test]
    fn the_bound_publishes_a_complete_set_without_waiting_for_the_next_frame() {
        let ms = 1_000_000;
        let mut waiting = ApproximateTimeSync::new(3, 10, 20 * ms, 0.1);
        let mut bounded = ApproximateTimeSync::new(3, 10, 20 * ms, 0.1).with_inter_message_lower_bound(15 * ms);
        let mut sets = [0, 0];
        for (topic, stamp) in [(0, 100 * ms), (1, 103 * ms), (2, 98 * ms)] {
            sets[0] += waiting.add(topic, stamp, ()).sets.len();
            sets[1] += bounded.add(topic, stamp, ()).sets.len();
        }
        assert_eq!(sets, [0, 1]);
    }

    #[test]
    fn sets_respect_the_interval_use_messages_once_and_never_cross() {
        let ms = 1_000_000;
        for seed in 0..100 {
            let (_, arrivals) = scenario(seed);
            let (sets, dropped, _) = run(&arrivals, 3, 5, 20 * ms, 0.1);
            assert!(!sets.is_empty());
            for w in sets.windows(2) {
                for (k, (a, b)) in w[0].iter().zip(&w[1]).enumerate() {
                    assert!(a < b, "seed {seed}: sets cross on topic {k}");
                }
            }
            for s in &sets {
                assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 20 * ms);
            }
            for (k, stamp, _) in &dropped {
                assert!(sets.iter().all(|s| s[*k] != *stamp), "seed {seed}: a dropped message was used");
            }
        }
    }

    #[test]
    fn bounded_queue_drops_oldest_with_reason() {
        // Topic 1 is silent: topic 0's queue overflows, oldest first.
        let mut sync = ApproximateTimeSync::new(2, 3, 1_000, 0.1);
        let mut dropped = Vec::new();
        for t in 1..=5 {
            let out = sync.add(0, t * 100, t);
            assert!(out.sets.is_empty());
            dropped.extend(out.dropped.into_iter().map(|(k, s, _, r)| (k, s, r)));
        }
        assert_eq!(dropped, vec![(0, 100, SyncDrop::QueueFull), (0, 200, SyncDrop::QueueFull)]);
        assert_eq!(sync.pending(), 3);
    }

    #[test]
    fn one_topic_makes_a_set_of_every_message_at_once() {
        let mut sync = ApproximateTimeSync::new(1, 1, 0, 0.1);
        for stamp in [10, 20, 35] {
            let out = sync.add(0, stamp, stamp);
            assert_eq!(out.sets, vec![vec![(stamp, stamp)]]);
            assert!(out.dropped.is_empty());
        }
        let out = sync.add(0, 35, 0);
        assert!(out.sets.is_empty() && out.dropped.len() == 1, "stamps must increase");
        assert_eq!(sync.pending(), 0);
    }

    #[test]
    fn out_of_order_and_duplicate_stamps_are_rejected() {
        let mut sync = ApproximateTimeSync::new(2, 10, 1_000, 0.1);
        assert!(sync.add(0, 500, ()).dropped.is_empty());
        let out = sync.add(0, 500, ());
        assert_eq!(out.dropped[0].3, SyncDrop::StampNotIncreasing);
        let out = sync.add(0, 400, ());
        assert_eq!(out.dropped[0].3, SyncDrop::StampNotIncreasing);
        let out = sync.add(1, 510, ());
        assert!(out.dropped.is_empty() && out.sets.is_empty());
        // A topic-0 message at 510 could still make a better set, so the pair waits for
        // topic 0's next message, which proves it optimal.
        assert!(sync.add(1, 2_000, ()).sets.is_empty());
        let out = sync.add(0, 1_000, ());
        let sets: Vec<Vec<i64>> = out.sets.iter().map(|s| s.iter().map(|m| m.0).collect()).collect();
        assert_eq!(sets, vec![vec![500, 510]]);
    }

    #[test]
    fn clear_returns_everything_queued() {
        let mut sync = ApproximateTimeSync::new(3, 10, 1_000, 0.1);
        sync.add(0, 1, 'a');
        sync.add(1, 2, 'b');
        let cleared = sync.clear();
        assert_eq!(cleared.len(), 2);
        assert_eq!(sync.pending(), 0);
        // Stamps start afresh after a clear (a clock jump backwards).
        assert!(sync.add(0, 0, 'c').dropped.is_empty());
    }
}
