//! The ApproximateTime synchronizer fed arbitrary stamp sequences (any order, duplicates,
//! gaps, stamps going backwards, clears) with any valid settings: every set holds one
//! message per camera in camera order with a spread within `max_interval`, sets never
//! cross, a message goes out at most once, and every message is in a set, dropped with
//! the reason that applies, or still pending.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vla_controller::core::sync::{ApproximateTimeSync, SyncDrop};

/// Stamps of builtin_interfaces/Time: seconds are an i32.
const TIME_MIN: i64 = i32::MIN as i64 * 1_000_000_000;
const TIME_MAX: i64 = i32::MAX as i64 * 1_000_000_000 + 999_999_999;

#[derive(Debug, Arbitrary)]
struct Input {
    topics: u8,
    queue: u8,
    /// Settings as the configuration turns seconds into nanoseconds: edge values too.
    max_interval: Duration,
    lower_bound: Duration,
    age_penalty: u8,
    start_sec: i32,
    steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
enum Duration {
    Zero,
    Millis(u16),
    Nanos(u64),
    Max,
}

impl Duration {
    fn ns(&self) -> i64 {
        match self {
            Duration::Zero => 0,
            Duration::Millis(ms) => i64::from(*ms) * 1_000_000,
            Duration::Nanos(n) => (*n >> 1) as i64,
            // What secs_to_ns gives a huge number of seconds.
            Duration::Max => i64::MAX,
        }
    }
}

#[derive(Debug, Arbitrary)]
enum Step {
    /// A message on `topic`, its stamp `delta_us` microseconds after that topic's last.
    Message { topic: u8, delta_us: i16 },
    /// A message at an arbitrary stamp.
    Anywhere { topic: u8, sec: i32, nanosec: u32 },
    /// Everything queued is let go (a clock jump backwards).
    Clear,
}

fuzz_target!(|input: Input| {
    let n = 1 + input.topics as usize % 6;
    let queue = 1 + input.queue as usize % 16;
    let (max_interval, bound) = (input.max_interval.ns(), input.lower_bound.ns());
    let age_penalty = [0.0, 0.1, 1.0, 1e300][input.age_penalty as usize % 4];
    let mut sync = ApproximateTimeSync::new(n, queue, max_interval, age_penalty).with_inter_message_lower_bound(bound);

    // The harness's own model of what each topic accepted last.
    let start = i64::from(input.start_sec) * 1_000_000_000;
    let mut last: Vec<Option<i64>> = vec![None; n];
    let mut cursor = vec![start; n];
    let mut outstanding = std::collections::BTreeSet::new();
    let mut published: Vec<Vec<i64>> = Vec::new();
    let mut id = 0u64;
    for step in &input.steps {
        let (topic, stamp) = match *step {
            Step::Clear => {
                for (k, _, (topic, msg_id)) in sync.clear() {
                    assert_eq!(k, topic);
                    assert!(outstanding.remove(&msg_id), "cleared message {msg_id} was not pending");
                }
                last.iter_mut().for_each(|l| *l = None);
                published.clear();
                continue;
            }
            Step::Message { topic, delta_us } => {
                let k = topic as usize % n;
                cursor[k] = (cursor[k] + i64::from(delta_us) * 1000).clamp(TIME_MIN, TIME_MAX);
                (k, cursor[k])
            }
            Step::Anywhere { topic, sec, nanosec } => {
                let k = topic as usize % n;
                (k, i64::from(sec) * 1_000_000_000 + i64::from(nanosec % 1_000_000_000))
            }
        };
        id += 1;
        let out = sync.add(topic, stamp, (topic, id));
        if last[topic].is_some_and(|l| stamp <= l) {
            assert!(out.sets.is_empty(), "a refused message completed a set");
            assert!(
                matches!(out.dropped.as_slice(), [(k, s, (_, i), SyncDrop::StampNotIncreasing)] if *k == topic && *s == stamp && *i == id),
                "message {id} on {topic} at {stamp} after {:?}: {:?}", last[topic], out.dropped
            );
            continue;
        }
        last[topic] = Some(stamp);
        outstanding.insert(id);
        for (k, s, (t, i), reason) in &out.dropped {
            assert_eq!(k, t, "dropped on its own topic");
            assert_ne!(*reason, SyncDrop::StampNotIncreasing, "an accepted message");
            assert!(outstanding.remove(i), "message {i} at {s} dropped twice or never queued");
        }
        if n == 1 {
            assert_eq!(out.sets.len(), 1, "one camera: every accepted frame is a set at once");
        }
        for set in &out.sets {
            assert_eq!(set.len(), n, "one message per camera");
            for (k, (s, (t, i))) in set.iter().enumerate() {
                assert_eq!(*t, k, "camera order");
                assert!(outstanding.remove(i), "message {i} at {s} used twice or never queued");
            }
            let stamps: Vec<i64> = set.iter().map(|(s, _)| *s).collect();
            let (lo, hi) = (*stamps.iter().min().unwrap(), *stamps.iter().max().unwrap());
            assert!(hi - lo <= max_interval, "spread {} beyond {max_interval}", hi - lo);
            if let Some(prev) = published.last() {
                assert!(prev.iter().zip(&stamps).all(|(a, b)| a < b), "sets cross: {prev:?} then {stamps:?}");
            }
            published.push(stamps);
        }
    }
    assert_eq!(sync.pending(), outstanding.len(), "every message is in a set, dropped, or pending");
});
