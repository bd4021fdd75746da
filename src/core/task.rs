//! One instruction run as a task (a goal of the `~/execute_instruction` action): when it
//! ends and how, judged tick by tick from what the pipeline did. No ROS and no clock of
//! its own: the caller passes each tick's output and the time.
//!
//! A task ends when
//! - the commanded motion settles: no joint's commanded speed above `settle_speed` for
//!   `settle_time`, counted only over ticks that executed the task's own chunks (a hold
//!   while the first chunk is computed is not settling);
//! - its time limit passes;
//! - an input goes silent, the policy fails or the clock jumps (a fault);
//! - the node is disabled;
//! - or from outside: cancelled, or preempted by another task or instruction
//!   ([`Task::end`]).

use crate::core::config::{secs_to_ns, Config};
use crate::core::pipeline::{ControlState, TickOutput};

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Settled,
    TimeLimit,
    Cancelled,
    /// By what: another goal, or an instruction on the topic.
    Preempted(String),
    /// The state that stopped it (an input went silent, the policy failed).
    Fault(String),
    Disabled,
}

impl Outcome {
    /// Whether the arm holds afterwards (the instruction is withdrawn): after every
    /// outcome but a preemption, whose successor takes over.
    pub fn holds(&self) -> bool {
        !matches!(self, Outcome::Preempted(_))
    }

    /// A short name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Settled => "settled",
            Outcome::TimeLimit => "time_limit",
            Outcome::Cancelled => "cancelled",
            Outcome::Preempted(_) => "preempted",
            Outcome::Fault(_) => "fault",
            Outcome::Disabled => "disabled",
        }
    }

    /// What ended the task, in words.
    pub fn message(&self) -> String {
        match self {
            Outcome::Settled => "the commanded motion settled".into(),
            Outcome::TimeLimit => "the time limit passed".into(),
            Outcome::Cancelled => "cancelled; the arm holds".into(),
            Outcome::Preempted(by) => format!("preempted by {by}"),
            Outcome::Fault(why) => format!("fault: {why}"),
            Outcome::Disabled => "the node was disabled; the arm holds".into(),
        }
    }
}

/// The task's progress, as the action's feedback reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// The node's state at the last tick.
    pub state: String,
    pub elapsed_ns: i64,
    /// The last command, in `joint_names` order (empty before the first).
    pub command: Vec<f64>,
    /// Its change over the last control period, per second.
    pub velocity: Vec<f64>,
    /// The largest |velocity|.
    pub speed: f64,
    /// How long `speed` has stayed under the settle speed, on the task's own chunks.
    pub settled_for_ns: i64,
}

/// When a task has settled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SettleRule {
    /// Largest commanded speed of any joint that counts as still, units per second.
    pub speed: f64,
    /// How long the motion must stay under it.
    pub time_ns: i64,
    pub period_ns: i64,
}

impl SettleRule {
    pub fn from_config(cfg: &Config) -> Self {
        SettleRule { speed: cfg.goal_settle_speed, time_ns: secs_to_ns(cfg.goal_settle_time_s), period_ns: cfg.control_period_ns() }
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    /// The pipeline's number of the task's instruction.
    seq: u64,
    started: i64,
    /// Zero: none.
    time_limit_ns: i64,
    rule: SettleRule,
    previous: Option<Vec<f64>>,
    still_since: Option<i64>,
    progress: Progress,
}

impl Task {
    /// A task of instruction number `seq`, started at `now`; `time_limit_ns` 0 for none.
    pub fn new(seq: u64, now: i64, time_limit_ns: i64, rule: SettleRule) -> Self {
        Task { seq, started: now, time_limit_ns: time_limit_ns.max(0), rule, previous: None, still_since: None, progress: Progress::default() }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// One control tick's output at `now`; returns the outcome when the task ended.
    pub fn update(&mut self, now: i64, out: &TickOutput) -> Option<Outcome> {
        let p = &mut self.progress;
        p.state = out.state.to_string();
        p.elapsed_ns = now - self.started;
        if let Some(cmd) = &out.command {
            let period_s = self.rule.period_ns as f64 / 1e9;
            p.velocity = match &self.previous {
                Some(prev) if prev.len() == cmd.len() => cmd.iter().zip(prev).map(|(c, p)| (c - p) / period_s).collect(),
                _ => vec![0.0; cmd.len()],
            };
            p.speed = p.velocity.iter().fold(0.0, |m: f64, v| m.max(v.abs()));
            p.command = cmd.clone();
            self.previous = Some(cmd.clone());
        }
        let own = out.instruction_seq == Some(self.seq);
        self.still_since = match self.still_since {
            _ if !own || p.speed > self.rule.speed => None,
            Some(t) => Some(t),
            None => Some(now),
        };
        p.settled_for_ns = self.still_since.map_or(0, |t| now - t);
        match &out.state {
            ControlState::Stale { .. } | ControlState::PolicyFault(_) | ControlState::ClockJump => {
                return Some(Outcome::Fault(out.state.to_string()))
            }
            ControlState::Disabled => return Some(Outcome::Disabled),
            _ => {}
        }
        if p.settled_for_ns >= self.rule.time_ns {
            return Some(Outcome::Settled);
        }
        if self.time_limit_ns > 0 && p.elapsed_ns >= self.time_limit_ns {
            return Some(Outcome::TimeLimit);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    fn rule() -> SettleRule {
        SettleRule { speed: 0.1, time_ns: 100 * MS, period_ns: 10 * MS }
    }

    fn out(state: ControlState, command: f64, seq: Option<u64>) -> TickOutput {
        TickOutput {
            command: Some(vec![command, 0.0]),
            publish: true,
            plan: Vec::new(),
            instruction_seq: seq,
            target: None,
            source: None,
            state_changed: false,
            state,
        }
    }

    /// Ticks every 10 ms from `from`; `cmd(k)` is the command of tick k; returns the
    /// outcome and when.
    fn run(task: &mut Task, from: i64, ticks: i64, cmd: impl Fn(i64) -> (ControlState, f64, Option<u64>)) -> Option<(i64, Outcome)> {
        (0..ticks).find_map(|k| {
            let (state, c, seq) = cmd(k);
            let now = from + k * 10 * MS;
            task.update(now, &out(state, c, seq)).map(|o| (now, o))
        })
    }

    #[test]
    fn settles_once_still_for_the_settle_time_on_its_own_chunks() {
        let mut task = Task::new(2, 0, 0, rule());
        // 5 ticks waiting for the first chunk (still, but not the task's), then 0.005 a
        // tick (0.5 per second) for 20 ticks, then still.
        let outcome = run(&mut task, 0, 100, |k| match k {
            0..5 => (ControlState::WaitingForActions, 0.0, None),
            5..25 => (ControlState::Running, (k - 5) as f64 * 0.005, Some(2)),
            _ => (ControlState::Running, 0.1, Some(2)),
        });
        // Tick 25 makes the last move (0.095 to 0.1): still from tick 26, settled 100 ms
        // later. The still ticks of tick 5 (the first chunk's first action) do not carry
        // over the motion after them.
        let (t, o) = outcome.expect("settles");
        assert_eq!(o, Outcome::Settled);
        assert_eq!(t, 360 * MS);
        assert!(task.progress().speed < 1e-12 && task.progress().settled_for_ns == 100 * MS);
        assert_eq!(task.progress().command, vec![0.1, 0.0]);
    }

    #[test]
    fn chunks_of_another_instruction_do_not_settle_it_and_the_time_limit_ends_it() {
        let mut task = Task::new(3, 1000 * MS, 300 * MS, rule());
        let outcome = run(&mut task, 1000 * MS, 100, |_| (ControlState::Running, 0.0, Some(2)));
        assert_eq!(outcome, Some((1300 * MS, Outcome::TimeLimit)));
        assert_eq!(task.progress().elapsed_ns, 300 * MS);
    }

    #[test]
    fn faults_and_disabling_end_it() {
        let stale = ControlState::Stale { topic: "camera/main/image_raw".into(), never: false };
        for (state, expect) in [
            (stale.clone(), Outcome::Fault(stale.to_string())),
            (ControlState::PolicyFault("boom".into()), Outcome::Fault("holding: policy failed: boom".into())),
            (ControlState::Disabled, Outcome::Disabled),
        ] {
            let mut task = Task::new(1, 0, 0, rule());
            let outcome = run(&mut task, 0, 10, |k| if k < 3 { (ControlState::Running, k as f64, Some(1)) } else { (state.clone(), 2.0, None) });
            assert_eq!(outcome, Some((30 * MS, expect)));
        }
        assert!(Outcome::Cancelled.holds() && !Outcome::Preempted("x".into()).holds());
        assert_eq!(Outcome::Preempted("a new goal".into()).message(), "preempted by a new goal");
    }
}
