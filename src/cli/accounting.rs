//! What a replay read, did and left out: printed, and written as accounting.txt and
//! accounting.json beside the output bag.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::core::stats::Stats;

/// What the replay read, did and left out: printed and written as accounting.json.
#[derive(Debug, Default, Serialize)]
pub struct Accounting {
    pub input: String,
    pub output: String,
    /// Messages read per bag topic.
    pub read: BTreeMap<String, u64>,
    /// Bag topics that are not inputs of the node, and how many messages they held.
    pub not_inputs: BTreeMap<String, u64>,
    /// Per node input topic: received, used, dropped (good but unused) and rejected (bad),
    /// each with its reason.
    pub received: BTreeMap<String, u64>,
    pub used: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, BTreeMap<String, u64>>,
    pub rejected: BTreeMap<String, BTreeMap<String, u64>>,
    pub synchronized_sets: u64,
    pub inferences: u64,
    pub inference_errors: u64,
    pub commands: u64,
    pub hold_commands: u64,
    pub explanations: u64,
    pub messages_written: u64,
    /// Problems with the input: damaged data, missing topics.
    pub errors: Vec<String>,
    pub bag_seconds: f64,
    pub wall_seconds: f64,
}

impl Accounting {
    pub fn fill(&mut self, st: &Stats) {
        self.received = st.received.clone();
        self.used = st.used.clone();
        for ((topic, reason), n) in &st.dropped {
            self.dropped.entry(topic.clone()).or_default().insert(reason.clone(), *n);
        }
        for ((topic, reason), n) in &st.rejected {
            self.rejected.entry(topic.clone()).or_default().insert(reason.clone(), *n);
        }
        self.synchronized_sets = st.observations;
        self.inferences = st.inferences;
        self.inference_errors = st.inference_errors;
        self.commands = st.commands;
        self.hold_commands = st.hold_commands;
        self.explanations = st.explanations;
    }

    pub fn summary(&self) -> String {
        let mut s = format!("replay of {} into {}\n", self.input, self.output);
        s += "messages read per topic:\n";
        for (t, n) in &self.read {
            let note = if self.not_inputs.contains_key(t) { "  (not an input: ignored)" } else { "" };
            s += &format!("  {t:<40} {n:>7}{note}\n");
        }
        s += &format!(
            "synchronized sets {}, inferences {} ({} failed), commands {} ({} holding), explanations {}\n",
            self.synchronized_sets, self.inferences, self.inference_errors, self.commands, self.hold_commands, self.explanations
        );
        for (t, n) in &self.received {
            s += &format!("  {t:<40} received {n:>7}, used {:>7}\n", self.used.get(t).copied().unwrap_or(0));
            for (kind, map) in [("dropped", &self.dropped), ("rejected", &self.rejected)] {
                for (reason, n) in map.get(t).into_iter().flatten() {
                    s += &format!("    {kind} {n:>7}: {reason}\n");
                }
            }
        }
        for (t, map) in self.rejected.iter().filter(|(t, _)| !self.received.contains_key(*t)) {
            for (reason, n) in map {
                s += &format!("  {t:<40} rejected {n:>7}: {reason}\n");
            }
        }
        let speed = if self.wall_seconds > 0.0 { self.bag_seconds / self.wall_seconds } else { 0.0 };
        s += &format!(
            "{:.1} s of recording in {:.1} s ({:.1} sets/s, {:.2}x real time); {} messages written\n",
            self.bag_seconds,
            self.wall_seconds,
            self.synchronized_sets as f64 / self.wall_seconds.max(1e-9),
            speed,
            self.messages_written
        );
        for e in &self.errors {
            s += &format!("ERROR: {e}\n");
        }
        s
    }
}

