//! Counters for everything that enters and leaves the pipeline: what /diagnostics shows
//! and the replay prints. Every input message is counted as received and then either
//! used or dropped with a reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::pipeline::{Event, Events};
use crate::core::topics::InputNames;
use crate::core::window::Recent;

/// How often the same (topic, reason) drop is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct Stats {
    pub received: BTreeMap<String, u64>,
    pub used: BTreeMap<String, u64>,
    /// Good messages that were not used, per (topic, reason): e.g. not matched by the
    /// synchronizer.
    pub dropped: BTreeMap<(String, String), u64>,
    /// Bad messages refused, per (topic, reason): e.g. an unsupported encoding.
    pub rejected: BTreeMap<(String, String), u64>,
    /// Synchronized camera sets paired with a joint state and an instruction.
    pub observations: u64,
    /// Observations replaced by a newer one before inference took them (newest wins).
    pub observations_superseded: u64,
    /// Observations not inferred: real-time chunking waited for the execution horizon.
    pub rtc_waits: u64,
    pub inferences: u64,
    pub inference_errors: u64,
    /// Forward time of the last inference and the largest seen, in milliseconds.
    pub inference_ms_last: f64,
    pub inference_ms_max: f64,
    pub commands: u64,
    /// Commands that repeated the previous one because the node was holding.
    pub hold_commands: u64,
    pub clipped_by_limit: u64,
    pub clipped_by_step: u64,
    pub explanations: u64,
    pub explain_errors: u64,
    /// Time to compute and render the last explanation and the largest seen, in ms.
    pub explain_ms_last: f64,
    pub explain_ms_max: f64,
    /// The last seconds: input rates, camera sets' stamp spreads, forward times.
    pub recent: Recent,
    last_logged: HashMap<(String, String), Instant>,
}

pub type SharedStats = Arc<Mutex<Stats>>;

/// A detail for the log: its first 200 characters and how many more there were (a
/// rejected instruction or encoding can be a megabyte long).
struct Shortened<'a>(&'a str);

impl std::fmt::Display for Shortened<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 200;
        match self.0.char_indices().nth(SHOWN) {
            None => f.write_str(self.0),
            Some((cut, _)) => write!(f, "{}... ({} more characters)", &self.0[..cut], self.0[cut..].chars().count()),
        }
    }
}

/// Locks shared stats; a thread that panicked while holding them left counters, which
/// are still worth reporting.
pub fn lock(stats: &Mutex<Stats>) -> std::sync::MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

fn bump(map: &mut BTreeMap<(String, String), u64>, key: &(String, String)) -> u64 {
    let c = map.entry(key.clone()).or_default();
    *c += 1;
    *c
}

impl Stats {
    /// Counts (and, rate-limited, logs) what the pipeline reported, emptying `events`.
    pub fn record(&mut self, names: &InputNames, events: &mut Events) {
        for e in events.drain(..) {
            match e {
                Event::Received(i) => self.received(names.topic(i)),
                Event::Used(i) => self.used(names.topic(i), 1),
                Event::Dropped(i, reason) => self.dropped(names.topic(i), reason),
                Event::Rejected { input, reason, detail } => self.rejected(names.topic(input), reason, &detail),
                Event::CameraSet { spread, at } => self.recent.spread.push(at, spread as f64),
                Event::Observation => self.observations += 1,
                Event::Command { hold, clipped } => {
                    self.commands += 1;
                    self.hold_commands += hold as u64;
                    self.clipped_by_limit += clipped.by_limit as u64;
                    self.clipped_by_step += clipped.by_step as u64;
                }
                Event::RtcWait => self.rtc_waits += 1,
                Event::NewInstruction { text, seq, unknown } => {
                    if unknown > 0 {
                        tracing::warn!(unknown, "instruction has characters the policy's vocabulary lacks");
                    }
                    tracing::info!(instruction = &*text, seq, "new instruction");
                }
            }
        }
    }

    /// Counts one inference that took `ms` milliseconds.
    pub fn inferred(&mut self, ms: f64) {
        self.inferences += 1;
        self.inference_ms_last = ms;
        self.inference_ms_max = self.inference_ms_max.max(ms);
    }

    /// Counts one explanation that took `ms` milliseconds.
    pub fn explained(&mut self, ms: f64) {
        self.explanations += 1;
        self.explain_ms_last = ms;
        self.explain_ms_max = self.explain_ms_max.max(ms);
    }

    pub fn received(&mut self, topic: &str) {
        *self.received.entry(topic.to_owned()).or_default() += 1;
    }

    pub fn used(&mut self, topic: &str, n: u64) {
        *self.used.entry(topic.to_owned()).or_default() += n;
    }

    /// Counts a good input that was not used, under its reason, and logs it at most once
    /// per `LOG_EVERY` for the same topic and reason (with the count so far).
    pub fn dropped(&mut self, topic: &str, reason: &str) {
        let key = (topic.to_owned(), reason.to_owned());
        let n = bump(&mut self.dropped, &key);
        if self.log_due(key) {
            tracing::warn!(topic, reason, count = n, "input not used");
        }
    }

    /// Counts a bad input, refused: under `reason` (a fixed category, so diagnostics keys
    /// stay few), logged with `detail` (the values).
    pub fn rejected(&mut self, topic: &str, reason: &str, detail: &str) {
        let key = (topic.to_owned(), reason.to_owned());
        let n = bump(&mut self.rejected, &key);
        if self.log_due(key) {
            tracing::warn!(topic, reason = %Shortened(detail), count = n, "input rejected");
        }
    }

    /// Counts a failed inference and logs it, rate-limited like drops.
    pub fn inference_failed(&mut self, error: &str) {
        self.inference_errors += 1;
        let n = self.inference_errors;
        if self.log_due(("policy".into(), "inference failed".into())) {
            tracing::error!(reason = error, count = n, "inference failed; holding position");
        }
    }

    /// Whether a log line for `key` is due: the first time, then once per `LOG_EVERY`.
    fn log_due(&mut self, key: (String, String)) -> bool {
        let now = Instant::now();
        let due = self.last_logged.get(&key).is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
        if due {
            self.last_logged.insert(key, now);
        }
        due
    }

    /// Every counter as key and value, as /diagnostics shows them, after the state.
    pub fn key_values(&self, state: &str) -> Vec<(String, String)> {
        let mut values = vec![
            ("state".to_owned(), state.to_owned()),
            ("observations".to_owned(), self.observations.to_string()),
            ("observations_superseded".to_owned(), self.observations_superseded.to_string()),
            ("rtc_waits".to_owned(), self.rtc_waits.to_string()),
            ("inferences".to_owned(), self.inferences.to_string()),
            ("inference_errors".to_owned(), self.inference_errors.to_string()),
            ("inference_ms_last".to_owned(), format!("{:.2}", self.inference_ms_last)),
            ("inference_ms_max".to_owned(), format!("{:.2}", self.inference_ms_max)),
            ("commands".to_owned(), self.commands.to_string()),
            ("hold_commands".to_owned(), self.hold_commands.to_string()),
            ("clipped_by_limit".to_owned(), self.clipped_by_limit.to_string()),
            ("clipped_by_step".to_owned(), self.clipped_by_step.to_string()),
            ("explanations".to_owned(), self.explanations.to_string()),
            ("explain_errors".to_owned(), self.explain_errors.to_string()),
            ("explain_ms_last".to_owned(), format!("{:.1}", self.explain_ms_last)),
            ("explain_ms_max".to_owned(), format!("{:.1}", self.explain_ms_max)),
            ("dropped_total".to_owned(), self.dropped_total().to_string()),
            ("rejected_total".to_owned(), self.rejected_total().to_string()),
        ];
        for (topic, n) in &self.received {
            values.push((format!("received/{topic}"), n.to_string()));
        }
        for (topic, n) in &self.used {
            values.push((format!("used/{topic}"), n.to_string()));
        }
        for ((topic, reason), n) in &self.dropped {
            values.push((format!("dropped/{topic}/{reason}"), n.to_string()));
        }
        for ((topic, reason), n) in &self.rejected {
            values.push((format!("rejected/{topic}/{reason}"), n.to_string()));
        }
        values
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_details_are_shortened_for_the_log() {
        assert_eq!(Shortened("unsupported encoding `yuv422`").to_string(), "unsupported encoding `yuv422`");
        let long = "红".repeat(1000);
        let s = Shortened(&long).to_string();
        assert!(s.starts_with(&"红".repeat(200)) && s.ends_with("红... (800 more characters)"), "{s}");
    }
}
