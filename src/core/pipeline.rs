//! The pipeline without ROS, files or threads: camera frames, joint states and
//! instructions in; observations for the policy out; chunks from the policy in; one safe
//! command per control tick out. The live node and the bag replay drive this same type
//! (through [`super::driver::Driver`]).
//!
//! Time is an input everywhere: `now` is the node's clock (sim time under
//! `use_sim_time`, bag time in a replay), stamps are the messages' own. Nothing here
//! counts or logs: every method reports what happened as [`Event`]s into the caller's
//! buffer, which the caller turns into counters and log lines ([`super::stats::Stats`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use crate::core::config::{secs_to_ns, Config, Smoothing};
use crate::core::contract::PolicyMeta;
use crate::core::control::limits::JointLimits;
use crate::core::control::rtc::{Decision, Plan};
use crate::core::control::safety::{Clipped, SafetyFilter};
use crate::core::control::smoothing::Smoother;
use crate::core::inputs::image::ImageError;
use crate::core::inputs::joints::JointBuffer;
use crate::core::inputs::tokenizer::{Tokenizer, Tokens};
use crate::core::inputs::CameraImage;
use crate::core::joint_map::JointMap;
use crate::core::sync::ApproximateTimeSync;
use crate::core::topics::Input;

/// What the pipeline did, for the counters and the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Received(Input),
    Used(Input),
    /// A good input that was not used, with the reason.
    Dropped(Input, &'static str),
    /// A bad input, refused: `reason` is a fixed category (so diagnostics keys stay
    /// few), `detail` the values.
    Rejected { input: Input, reason: &'static str, detail: String },
    /// The synchronizer made a camera set at `at` (node clock) whose stamps spread over
    /// `spread` nanoseconds (newest minus oldest).
    CameraSet { spread: i64, at: i64 },
    /// A synchronized camera set was paired with a joint state and an instruction.
    Observation,
    /// A command went out; `hold` when it repeated the previous one.
    Command { hold: bool, clipped: Clipped },
    /// A new instruction took effect; `unknown` tokens are outside the vocabulary.
    NewInstruction { text: Arc<str>, seq: u64, unknown: usize },
    /// A camera set was not inferred: real-time chunking waits until the running chunk
    /// has no more than its execution horizon left.
    RtcWait,
}

/// The caller's buffer of [`Event`]s.
pub type Events = Vec<Event>;

/// One camera frame at the policy's size, waiting in the synchronizer.
#[derive(Debug)]
struct Frame {
    rgb: Vec<u8>,
    /// When it arrived, on the node's clock.
    arrival: i64,
    source: Arc<CameraImage>,
}

/// Everything one inference needs.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Latest camera stamp of the set.
    pub stamp: i64,
    /// When the set was complete, on the node's clock; action 0 of the resulting chunk
    /// is meant for the control tick at this time.
    pub arrival: i64,
    /// Each camera's RGB image at the policy's size for it, camera after camera.
    pub images: Vec<u8>,
    /// The policy's state (its `state_names` order), from the joint state nearest the
    /// set's stamp.
    pub state: Vec<f64>,
    pub instruction: Arc<str>,
    pub tokens: Arc<Tokens>,
    /// Increases with every new instruction.
    pub instruction_seq: u64,
    /// The camera images of the set, in camera order.
    pub cameras: Vec<Arc<CameraImage>>,
    /// Real-time chunking: the running chunk to keep, set when the set is inferred.
    pub inpaint: Option<Inpaint>,
}

/// A chunk as it will run: one command per control tick from `start` (on the node's
/// clock), in `joint_names` order, before smoothing and the safety filter.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChunk {
    pub start: i64,
    pub commands: Vec<Vec<f64>>,
}

/// What real-time chunking keeps of the running chunk in the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct Inpaint {
    /// The running chunk's actions for the new chunk's ticks, as the policy's actions
    /// (its order; delta ones relative to the observation's state).
    pub prefix: Vec<Vec<f64>>,
    /// Ticks the new chunk takes to arrive: its first `delay` actions are the prefix's.
    pub delay: usize,
}

/// Why the node is or is not executing the policy's actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlState {
    Running,
    /// No usable instruction has arrived yet.
    WaitingForInstruction,
    /// An input has not arrived within its timeout (or never did).
    Stale { topic: String, never: bool },
    /// The last inference failed.
    PolicyFault(String),
    /// Inputs are fresh but no chunk covers this tick yet (start-up, or inference slower
    /// than a chunk lasts).
    WaitingForActions,
    /// The clock went backwards (a bag looping in sim time): state was reset.
    ClockJump,
    /// Disabled by the operator: holding, nothing new executed until enabled.
    Disabled,
}

impl ControlState {
    /// Diagnostic level: 0 OK, 1 WARN, 2 ERROR.
    pub fn level(&self) -> u8 {
        match self {
            ControlState::Running => 0,
            ControlState::WaitingForInstruction
            | ControlState::WaitingForActions
            | ControlState::ClockJump
            | ControlState::Disabled => 1,
            ControlState::Stale { .. } | ControlState::PolicyFault(_) => 2,
        }
    }

    pub fn is_hold(&self) -> bool {
        *self != ControlState::Running
    }
}

impl fmt::Display for ControlState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlState::Running => write!(f, "running"),
            ControlState::WaitingForInstruction => write!(f, "holding: no instruction yet"),
            ControlState::Stale { topic, never: true } => write!(f, "holding: no message on {topic} yet"),
            ControlState::Stale { topic, never: false } => write!(f, "holding: {topic} went silent"),
            ControlState::PolicyFault(e) => write!(f, "holding: policy failed: {e}"),
            ControlState::WaitingForActions => write!(f, "holding: waiting for actions"),
            ControlState::ClockJump => write!(f, "holding: clock jumped backwards, state reset"),
            ControlState::Disabled => write!(f, "holding: disabled"),
        }
    }
}

/// What one control tick decided.
#[derive(Debug, Clone, PartialEq)]
pub struct TickOutput {
    /// The command of this tick; `None` until the node has commanded anything (holding
    /// before the first command means sending nothing).
    pub command: Option<Vec<f64>>,
    /// Whether the command goes out at this tick: every tick, except with multi-point
    /// trajectories, which go out every `trajectory_every` ticks (and at once when the
    /// node starts or stops holding); in between, the controller executes the plan sent
    /// last, and so do the commands of those ticks.
    pub publish: bool,
    /// When running and publishing: the planned commands of the ticks after this one (at
    /// most the trajectory horizon less one), each within the limits and one step of the
    /// one before, as the controller will execute them.
    pub plan: Vec<Vec<f64>>,
    /// When running, the instruction whose chunks the command comes from.
    pub instruction_seq: Option<u64>,
    /// The smoothed action for this tick before the safety filter, when running: where
    /// the policy is taking the arm (published as predicted motion).
    pub target: Option<Vec<f64>>,
    /// When running, the stamp of the newest camera set whose chunk this command uses
    /// (for measuring latency from input to command).
    pub source: Option<i64>,
    pub state: ControlState,
    /// True when `state` differs from the previous tick's.
    pub state_changed: bool,
}

struct Instruction {
    text: Arc<str>,
    tokens: Arc<Tokens>,
    seq: u64,
}

pub struct Pipeline {
    camera_topics: Vec<String>,
    /// The newest instruction's number (also after it was cleared).
    seq: u64,
    sync: ApproximateTimeSync<Frame>,
    joints: JointBuffer,
    joint_map: JointMap,
    /// Command joints: the first of the joint buffer's.
    command_joints: usize,
    /// None: the policy takes no instruction, and none is waited for.
    tokenizer: Option<Tokenizer>,
    instruction: Option<Instruction>,
    /// Arrival of the last valid message per input: cameras, then joint_states.
    last_arrival: Vec<Option<i64>>,
    timeouts: Vec<i64>,
    joint_tolerance: i64,
    /// How far ahead of `now` a stamp may lie (max_stamp_lead_s).
    max_stamp_lead: i64,
    period: i64,
    smoother: Smoother,
    /// The running plan of real-time chunking (smoothing `rtc`).
    rtc: Option<Plan>,
    safety: SafetyFilter,
    tick_base: Option<i64>,
    last_now: Option<i64>,
    last_command: Option<Vec<f64>>,
    policy_fault: Option<String>,
    chunk_seq: u64,
    newest_chunk: Option<i64>,
    state: ControlState,
    clock_jumped: bool,
    enabled: bool,
    /// When the node was last enabled: chunks from inputs before it are not executed.
    enabled_at: Option<i64>,
    /// Commands per published plan (the command of the tick and the ones after it).
    plan_len: usize,
    /// Ticks from one published command to the next.
    every: i64,
    /// The planned commands published last, for the ticks from `committed_from` on:
    /// what the controller executes until the next publication.
    committed: VecDeque<Vec<f64>>,
    committed_from: i64,
    last_publication: Option<i64>,
}

impl Pipeline {
    /// A pipeline for `cfg` and a policy described by `meta` with `tokenizer`; `meta`
    /// must have passed [`PolicyMeta::differences`] against `cfg`.
    pub fn new(cfg: &Config, meta: &PolicyMeta, tokenizer: Option<Tokenizer>) -> Self {
        // The joints meet: PolicyMeta::differences checked it when the policy was loaded.
        let joint_map = JointMap::new(cfg, meta).expect("the policy's joints were checked against the configuration");
        let n = cfg.camera_names.len();
        let mut timeouts = vec![secs_to_ns(cfg.camera_timeout_s); n];
        timeouts.push(secs_to_ns(cfg.joint_state_timeout_s));
        let limits = JointLimits::from_config(cfg);
        Pipeline {
            camera_topics: cfg.camera_names.iter().map(|c| crate::core::topics::camera(c)).collect(),
            seq: 0,
            sync: ApproximateTimeSync::new(n, cfg.sync_queue_size, secs_to_ns(cfg.sync_max_interval_s), cfg.sync_age_penalty)
                .with_inter_message_lower_bound(secs_to_ns(cfg.sync_inter_message_lower_bound_s)),
            joints: JointBuffer::new(joint_map.robot_joints().to_vec()),
            command_joints: cfg.joint_names.len(),
            joint_map,
            tokenizer,
            instruction: None,
            last_arrival: vec![None; n + 1],
            timeouts,
            joint_tolerance: secs_to_ns(cfg.joint_state_tolerance_s),
            max_stamp_lead: secs_to_ns(cfg.max_stamp_lead_s),
            period: cfg.control_period_ns(),
            smoother: Smoother::new(cfg.smoothing()),
            rtc: match cfg.smoothing() {
                Smoothing::Rtc { execution_horizon, fixed_delay, .. } => Some(Plan::new(execution_horizon, fixed_delay)),
                _ => None,
            },
            safety: SafetyFilter::new(limits.lower, limits.upper, limits.max_step),
            tick_base: None,
            last_now: None,
            last_command: None,
            policy_fault: None,
            chunk_seq: 0,
            newest_chunk: None,
            state: ControlState::WaitingForInstruction,
            clock_jumped: false,
            enabled: cfg.start_enabled,
            enabled_at: None,
            plan_len: cfg.plan_len(),
            every: cfg.trajectory_every(),
            committed: VecDeque::new(),
            committed_from: 0,
            last_publication: None,
        }
    }

    /// This pipeline with `limits` instead of the parameters file's (the robot
    /// description's, tightened by the parameters file): one per joint.
    pub fn with_limits(mut self, limits: JointLimits) -> Self {
        self.safety = SafetyFilter::new(limits.lower, limits.upper, limits.max_step);
        self
    }

    /// A camera message, already decoded (or rejected) by
    /// [`crate::core::inputs::ImageDecoder`]. Returns the observations it completed,
    /// oldest first.
    pub fn on_image(
        &mut self,
        camera: usize,
        image: Arc<CameraImage>,
        now: i64,
        decoded: Result<Vec<u8>, ImageError>,
        events: &mut Events,
    ) -> Vec<Observation> {
        let stamp = image.stamp;
        let input = Input::Camera(camera);
        events.push(Event::Received(input));
        let rgb = match decoded {
            Ok(rgb) => rgb,
            Err(e) => {
                events.push(Event::Rejected { input, reason: e.kind(), detail: e.to_string() });
                return Vec::new();
            }
        };
        if let Err((reason, detail)) = self.check_stamp(stamp, now) {
            events.push(Event::Rejected { input, reason, detail });
            return Vec::new();
        }
        self.last_arrival[camera] = Some(now);
        let out = self.sync.add(camera, stamp, Frame { rgb, arrival: now, source: image });
        for (k, _, _, reason) in &out.dropped {
            events.push(Event::Dropped(Input::Camera(*k), reason.reason()));
        }
        for set in &out.sets {
            let (lo, hi) = set.iter().fold((i64::MAX, i64::MIN), |(lo, hi), (s, _)| (lo.min(*s), hi.max(*s)));
            events.push(Event::CameraSet { spread: hi - lo, at: now });
        }
        out.sets.into_iter().filter_map(|set| self.observe(set, events)).collect()
    }

    fn observe(&mut self, set: Vec<(i64, Frame)>, events: &mut Events) -> Option<Observation> {
        let cameras = (0..self.camera_topics.len()).map(Input::Camera);
        // The synchronizer emits one frame per camera, never an empty set.
        let stamp = set.iter().map(|(s, _)| *s).max().expect("sets are not empty");
        // A policy without language takes the empty instruction.
        let no_language = Instruction { text: "".into(), tokens: Arc::new(Tokens::default()), seq: 0 };
        let instruction = if self.tokenizer.is_none() { Some(&no_language) } else { self.instruction.as_ref() };
        let reason = match (instruction, self.joints.nearest(stamp, self.joint_tolerance)) {
            (None, _) => "no instruction yet",
            (_, None) => "no joint state within joint_state_tolerance_s of the set",
            (Some(instr), Some(q)) => {
                let obs = Observation {
                    stamp,
                    // Not empty, as above.
                    arrival: set.iter().map(|(_, f)| f.arrival).max().expect("not empty"),
                    images: set.iter().fold(Vec::with_capacity(set.len() * set[0].1.rgb.len()), |mut v, (_, f)| {
                        v.extend_from_slice(&f.rgb);
                        v
                    }),
                    state: self.joint_map.state(q),
                    instruction: instr.text.clone(),
                    tokens: instr.tokens.clone(),
                    instruction_seq: instr.seq,
                    cameras: set.iter().map(|(_, f)| f.source.clone()).collect(),
                    inpaint: None,
                };
                events.extend(cameras.map(Event::Used));
                events.push(Event::Observation);
                return Some(obs);
            }
        };
        events.extend(cameras.map(|c| Event::Dropped(c, reason)));
        None
    }

    /// Whether a message's stamp can be used at `now`: a zero or negative stamp means
    /// the publisher does not stamp its messages, and a stamp far ahead of the clock
    /// would make every later message of its topic look late (stamps must increase).
    /// Before a simulated clock has started (`now` 0) only the first rule applies.
    fn check_stamp(&self, stamp: i64, now: i64) -> Result<(), (&'static str, String)> {
        if stamp <= 0 {
            return Err(("stamp not set (zero or negative)", format!("stamp {stamp} ns")));
        }
        if now > 0 && stamp.saturating_sub(now) > self.max_stamp_lead {
            let detail = format!("stamp {:.3} s ahead of the clock", (stamp - now) as f64 / 1e9);
            return Err(("stamp ahead of the clock by more than max_stamp_lead_s", detail));
        }
        Ok(())
    }

    pub fn on_joint_state(&mut self, stamp: i64, now: i64, names: &[String], positions: &[f64], events: &mut Events) {
        let input = Input::JointStates;
        events.push(Event::Received(input));
        if let Err((reason, detail)) = self.check_stamp(stamp, now) {
            events.push(Event::Rejected { input, reason, detail });
            return;
        }
        match self.joints.push(stamp, names, positions) {
            Ok(()) => {
                events.push(Event::Used(input));
                self.last_arrival[self.camera_topics.len()] = Some(now);
            }
            Err(e) => events.push(Event::Rejected { input, reason: e.kind(), detail: e.to_string() }),
        }
    }

    /// A new instruction from the topic. Empty ones, ones longer than the policy's token
    /// limit and ones holding control characters are rejected (and counted); the previous
    /// instruction stays in effect. The same text again changes nothing. A policy without
    /// language takes none: each is dropped. Returns the number of the instruction when a
    /// new one took effect.
    pub fn on_instruction(&mut self, text: &str, events: &mut Events) -> Option<u64> {
        events.push(Event::Received(Input::Instruction));
        if self.tokenizer.is_none() {
            events.push(Event::Dropped(Input::Instruction, "the policy takes no instruction"));
            return None;
        }
        match self.check_instruction(text) {
            Ok(trimmed) => {
                events.push(Event::Used(Input::Instruction));
                let trimmed = trimmed.to_owned();
                (self.instruction() != Some(trimmed.as_str())).then(|| self.set_instruction(&trimmed, events))
            }
            Err((reason, detail)) => {
                events.push(Event::Rejected { input: Input::Instruction, reason, detail: format!("{reason}: {detail}") });
                None
            }
        }
    }

    /// The instruction of a task (a goal of the action): checked as on the topic, and
    /// always a new instruction, even with the text in effect, so that nothing computed
    /// before the task is executed for it. Returns its number, or why it was refused.
    pub fn start_task(&mut self, text: &str, events: &mut Events) -> Result<u64, String> {
        match self.check_instruction(text) {
            Ok(trimmed) => {
                let trimmed = trimmed.to_owned();
                Ok(self.set_instruction(&trimmed, events))
            }
            Err((reason, detail)) => Err(format!("{reason}: {detail}")),
        }
    }

    /// The trimmed instruction, or why it is refused (a fixed reason and the values).
    fn check_instruction<'t>(&self, text: &'t str) -> Result<&'t str, (&'static str, String)> {
        let Some(tokenizer) = &self.tokenizer else { return Err(("the policy takes no instruction", String::new())) };
        let trimmed = text.trim();
        let tokens = tokenizer.encode(trimmed);
        if trimmed.is_empty() || tokens.is_empty() {
            Err(("empty instruction", String::new()))
        } else if trimmed.chars().any(|c| c.is_control() && !c.is_whitespace()) {
            Err(("instruction holds control characters", format!("{trimmed:?}")))
        } else if tokens.truncated > 0 {
            let n = tokens.len() + tokens.truncated;
            Err(("instruction longer than the policy's token limit", format!("{n} tokens, the policy takes {}", tokenizer.max_length())))
        } else if tokens.unknown + tokens.pieces.iter().filter(|p| p.trim().is_empty()).count() >= tokens.pieces.len() {
            // Every real token unknown or blank (only emoji, a zero-width space): the
            // policy would act on no word at all.
            Err(("instruction has no token in the policy's vocabulary", format!("{trimmed:?}")))
        } else {
            Ok(trimmed)
        }
    }

    /// Makes `text` the instruction in effect, under a new number. A policy fault of the
    /// previous instruction's inference no longer holds the node (the next inference
    /// says whether the policy fails again).
    fn set_instruction(&mut self, text: &str, events: &mut Events) -> u64 {
        let tokens = self.tokenizer.as_ref().map(|t| t.encode(text)).unwrap_or_default();
        self.seq += 1;
        let text: Arc<str> = text.into();
        events.push(Event::NewInstruction { text: text.clone(), seq: self.seq, unknown: tokens.unknown });
        self.instruction = Some(Instruction { text, tokens: Arc::new(tokens), seq: self.seq });
        self.policy_fault = None;
        self.seq
    }

    /// Forgets the instruction: the node holds until the next one (after a task ended).
    pub fn clear_instruction(&mut self) {
        self.instruction = None;
        self.committed.clear();
    }

    /// Enables or disables the node at `now`; returns whether that changed anything.
    /// Disabled, it holds; once enabled again, only chunks from inputs that arrived
    /// after `now` are executed.
    pub fn set_enabled(&mut self, enabled: bool, now: i64) -> bool {
        let changed = self.enabled != enabled;
        self.enabled = enabled;
        if changed && enabled {
            self.enabled_at = Some(now);
        }
        changed
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Forgets the last command, so that the next one starts from the measured joint
    /// state, one step at most from where the arm is: when commands start going out
    /// again after a dry run, during which the computed commands moved nothing.
    pub fn reanchor(&mut self) {
        self.last_command = None;
        self.committed.clear();
        self.last_publication = None;
    }

    pub fn instruction(&self) -> Option<&str> {
        self.instruction.as_ref().map(|i| &*i.text)
    }

    /// The number of the instruction in effect.
    pub fn instruction_seq(&self) -> Option<u64> {
        self.instruction.as_ref().map(|i| i.seq)
    }

    fn tick_index(&self, t: i64) -> i64 {
        let base = self.tick_base.unwrap_or(t);
        ((t - base) as f64 / self.period as f64).round() as i64
    }

    /// Whether to infer `obs` now. Real-time chunking waits (counted) while the running
    /// chunk has more than its execution horizon left, and otherwise says in
    /// `obs.inpaint` what of the running chunk to keep; other smoothings infer every set.
    pub fn prepare(&mut self, obs: &mut Observation, events: &mut Events) -> bool {
        let tick = self.tick_index(obs.arrival);
        let Some(plan) = &self.rtc else { return true };
        match plan.decide(tick) {
            Decision::Wait => {
                events.push(Event::RtcWait);
                false
            }
            Decision::Infer { prefix, delay } => {
                obs.inpaint = Some(Inpaint { prefix: self.joint_map.relative(&prefix, &obs.state), delay });
                true
            }
        }
    }

    /// The number of the instruction chunks are computed for: the one in effect, or
    /// (for a policy without language) 0.
    fn current_seq(&self) -> Option<u64> {
        if self.tokenizer.is_none() { Some(0) } else { self.instruction.as_ref().map(|i| i.seq) }
    }

    /// Whether a chunk from inputs of `obs_arrival` for instruction `instruction_seq`
    /// is to be executed; if not, says why in `events`.
    fn accepts(&self, obs_arrival: i64, instruction_seq: u64, events: &mut Events) -> bool {
        if self.current_seq() != Some(instruction_seq) {
            events.push(Event::Dropped(Input::Policy, "chunk computed for a previous instruction"));
            return false;
        }
        if !self.enabled || self.enabled_at.is_some_and(|t| obs_arrival < t) {
            events.push(Event::Dropped(Input::Policy, "chunk computed from inputs of a disabled node"));
            return false;
        }
        true
    }

    /// A chunk of the policy's actions (its `action_names` order, absolute or delta)
    /// computed from observation `obs`, available at `now`. Chunks of an instruction no
    /// longer in effect, and those from inputs of a disabled node, are discarded; the
    /// first chunk of a new instruction discards every queued action of the old one.
    /// With real-time chunking its first actions are the running chunk's, exactly.
    /// Returns the chunk as it will run (commands from `start`, one per tick), unless
    /// it was discarded.
    pub fn on_chunk(&mut self, obs: &Observation, actions: &[Vec<f64>], now: i64, events: &mut Events) -> Option<PlannedChunk> {
        if !self.accepts(obs.arrival, obs.instruction_seq, events) {
            return None;
        }
        if self.tick_base.is_none() {
            self.tick_base = Some(obs.arrival);
        }
        let mut absolute = self.joint_map.absolute(actions, &obs.state);
        let (first, at) = (self.tick_index(obs.arrival), self.tick_index(now));
        if let Some(plan) = &mut self.rtc {
            if obs.instruction_seq != self.chunk_seq {
                plan.reset();
            }
            absolute = plan.accept(first, absolute, obs.inpaint.as_ref().map_or(0, |i| i.delay), at);
        }
        let commands = self.joint_map.to_commands(&absolute);
        self.on_commands(obs.stamp, obs.arrival, obs.instruction_seq, &commands, events);
        let start = self.tick_base.unwrap_or(obs.arrival) + first * self.period;
        Some(PlannedChunk { start, commands })
    }

    /// A chunk already in command order and absolute, computed from the observation of
    /// stamp `obs_stamp` that was complete at `obs_arrival`.
    pub fn on_commands(&mut self, obs_stamp: i64, obs_arrival: i64, instruction_seq: u64, actions: &[Vec<f64>], events: &mut Events) {
        if !self.accepts(obs_arrival, instruction_seq, events) {
            return;
        }
        if instruction_seq != self.chunk_seq {
            self.smoother.reset();
            self.chunk_seq = instruction_seq;
        }
        if self.tick_base.is_none() {
            self.tick_base = Some(obs_arrival);
        }
        let first = self.tick_index(obs_arrival);
        self.smoother.add_chunk(first, actions);
        self.newest_chunk = Some(obs_stamp);
        self.policy_fault = None;
    }

    pub fn on_policy_error(&mut self, error: &str) {
        self.policy_fault = Some(error.to_owned());
    }

    fn input_state(&self, now: i64) -> ControlState {
        let n = self.camera_topics.len();
        for (i, arrival) in self.last_arrival.iter().enumerate() {
            let topic = if i < n { &self.camera_topics[i] } else { crate::core::topics::JOINT_STATES };
            match arrival {
                None => return ControlState::Stale { topic: topic.to_owned(), never: true },
                Some(t) if now - t > self.timeouts[i] => {
                    return ControlState::Stale { topic: topic.to_owned(), never: false }
                }
                _ => {}
            }
        }
        if !self.enabled {
            return ControlState::Disabled;
        }
        if self.instruction.is_none() && self.tokenizer.is_some() {
            return ControlState::WaitingForInstruction;
        }
        if let Some(e) = &self.policy_fault {
            return ControlState::PolicyFault(e.clone());
        }
        ControlState::Running
    }

    /// One control tick at `now`.
    pub fn tick(&mut self, now: i64, events: &mut Events) -> TickOutput {
        if self.last_now.is_some_and(|last| now < last) {
            self.reset_after_clock_jump(events);
        }
        self.last_now = Some(now);
        if self.tick_base.is_none() {
            self.tick_base = Some(now);
        }
        let tick = self.tick_index(now);
        let mut state = if self.clock_jumped { ControlState::ClockJump } else { self.input_state(now) };
        let mut smoothed = None;
        let (mut publish, mut plan) = (false, Vec::new());
        if state == ControlState::Running {
            match self.smoother.action_for(tick) {
                None => state = ControlState::WaitingForActions,
                Some(target) => {
                    smoothed = Some(target.clone());
                    (state, publish, plan) = self.command_or_follow_plan(tick, &target, events);
                }
            }
        }
        let state_changed = state != self.state;
        if state.is_hold() {
            self.committed.clear();
            if !matches!(state, ControlState::WaitingForActions) {
                // Nothing computed before a hold may run after it.
                self.smoother.reset();
                if let Some(plan) = &mut self.rtc {
                    plan.reset();
                }
            }
            if self.last_command.is_some() {
                events.push(Event::Command { hold: true, clipped: Clipped::default() });
                // A trajectory controller must get the hold at once: it replaces the plan
                // it was executing.
                publish = state_changed || self.publication_due(tick);
                if publish {
                    self.last_publication = Some(tick);
                }
            }
        }
        self.clock_jumped = false;
        self.state = state.clone();
        TickOutput {
            command: self.last_command.clone(),
            publish,
            plan,
            source: if state.is_hold() { None } else { self.newest_chunk },
            target: if state.is_hold() { None } else { smoothed },
            instruction_seq: (!state.is_hold()).then_some(self.chunk_seq),
            state,
            state_changed,
        }
    }

    fn publication_due(&self, tick: i64) -> bool {
        self.last_publication.is_none_or(|p| tick - p >= self.every)
    }

    /// Running at `tick` with smoothed action `target`: between publications, the
    /// command is the published plan's for this tick (what the controller executes);
    /// when a publication is due (or the plan ran out), it is the safety filter's for
    /// `target`, with the plan ahead from the smoother. Returns the state, whether to
    /// publish, and the plan after this tick's command.
    fn command_or_follow_plan(&mut self, tick: i64, target: &[f64], events: &mut Events) -> (ControlState, bool, Vec<Vec<f64>>) {
        let planned = usize::try_from(tick - self.committed_from).ok().and_then(|k| self.committed.get(k));
        if let (Some(cmd), false) = (planned, self.publication_due(tick)) {
            self.last_command = Some(cmd.clone());
            events.push(Event::Command { hold: false, clipped: Clipped::default() });
            return (ControlState::Running, false, Vec::new());
        }
        let state = self.command(target, events);
        if state != ControlState::Running {
            return (state, false, Vec::new());
        }
        let mut previous = self.last_command.clone().expect("just commanded");
        let mut plan = Vec::with_capacity(self.plan_len.saturating_sub(1));
        for target in self.smoother.planned(tick + 1, self.plan_len.saturating_sub(1)) {
            // A planned action the filter refuses ends the plan; when its tick comes, the
            // node holds.
            let Ok((cmd, _)) = self.safety.apply(&target, &previous) else { break };
            previous = cmd.clone();
            plan.push(cmd);
        }
        self.committed = plan.iter().cloned().collect();
        self.committed_from = tick + 1;
        self.last_publication = Some(tick);
        (state, true, plan)
    }

    /// The safety filter's command for `target`, from the previous command (or, before
    /// the first, the measured state); the state it leaves the node in.
    fn command(&mut self, target: &[f64], events: &mut Events) -> ControlState {
        let n = self.command_joints;
        let previous = self.last_command.clone().or_else(|| self.joints.latest().map(|q| q[..n].to_vec()));
        match previous.map(|p| self.safety.apply(target, &p)) {
            Some(Ok((cmd, clipped))) => {
                events.push(Event::Command { hold: false, clipped });
                self.last_command = Some(cmd);
                ControlState::Running
            }
            Some(Err(e)) => {
                let detail = e.to_string();
                events.push(Event::Rejected { input: Input::Policy, reason: "action refused by the safety filter", detail: detail.clone() });
                self.policy_fault = Some(detail.clone());
                ControlState::PolicyFault(detail)
            }
            None => ControlState::Stale { topic: crate::core::topics::JOINT_STATES.into(), never: true },
        }
    }

    /// Counts the messages still waiting in the synchronizer as dropped with `reason`
    /// (at the end of a recording, where no later message will complete their sets).
    pub fn drain(&mut self, reason: &'static str, events: &mut Events) {
        for (k, _, _) in self.sync.clear() {
            events.push(Event::Dropped(Input::Camera(k), reason));
        }
    }

    fn reset_after_clock_jump(&mut self, events: &mut Events) {
        self.drain("clock jumped backwards", events);
        self.joints.clear();
        self.smoother.reset();
        if let Some(plan) = &mut self.rtc {
            plan.reset();
        }
        self.committed.clear();
        self.last_publication = None;
        // On the new time line, every input arrives after the node was enabled.
        self.enabled_at = None;
        self.last_arrival.iter_mut().for_each(|a| *a = None);
        self.tick_base = None;
        self.clock_jumped = true;
    }

    pub fn state(&self) -> &ControlState {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::core::config::Smoothing;
    use crate::core::inputs::ImageDecoder;
    use crate::core::stats::{SharedStats, Stats};
    use crate::core::topics::InputNames;

    const MS: i64 = 1_000_000;

    fn meta() -> PolicyMeta {
        PolicyMeta::parse(
            r#"{"contract_version": 1, "name": "test", "camera_names": ["main", "side"], "image_height": 2,
            "image_width": 2, "patch_grid": [12, 16], "joint_names": ["a", "b"], "action_dim": 2, "chunk_length": 10,
            "control_rate_hz": 100.0, "tokenizer": {"type": "char", "vocab": "abcdefghijklmnopqrstuvwxyz ",
            "max_length": 16, "pad_id": 0, "unk_id": 1, "lowercase": true},
            "normalization": {"state_mean": [0, 0], "state_std": [1, 1], "action_mean": [0, 0], "action_std": [1, 1]}}"#,
        )
        .unwrap()
    }

    fn config() -> Config {
        Config {
            camera_names: vec!["main".into(), "side".into()],
            image_width: 4,
            image_height: 4,
            joint_names: vec!["a".into(), "b".into()],
            control_rate_hz: 100.0,
            joint_lower_limits: vec![-1.0, -1.0],
            joint_upper_limits: vec![1.0, 1.0],
            max_step_per_tick: vec![0.1, 0.1],
            camera_timeout_s: 0.1,
            joint_state_timeout_s: 0.05,
            ..Config::default()
        }
        .with_smoothing(Smoothing::None)
    }

    /// The pipeline with its events counted into shared stats, as the driver does.
    struct Counted {
        pipe: Pipeline,
        stats: SharedStats,
        names: InputNames,
        events: Events,
    }

    impl Counted {
        fn record<T>(&mut self, value: T) -> T {
            self.stats.lock().unwrap().record(&self.names, &mut self.events);
            value
        }

        fn on_image(&mut self, cam: usize, img: Arc<CameraImage>, now: i64, d: Result<Vec<u8>, ImageError>) -> Vec<Observation> {
            let out = self.pipe.on_image(cam, img, now, d, &mut self.events);
            self.record(out)
        }

        fn on_joint_state(&mut self, stamp: i64, now: i64, names: &[String], positions: &[f64]) {
            self.pipe.on_joint_state(stamp, now, names, positions, &mut self.events);
            self.record(())
        }

        fn on_instruction(&mut self, text: &str) {
            self.pipe.on_instruction(text, &mut self.events);
            self.record(())
        }

        fn on_chunk(&mut self, stamp: i64, arrival: i64, seq: u64, actions: &[Vec<f64>]) {
            self.pipe.on_commands(stamp, arrival, seq, actions, &mut self.events);
            self.record(())
        }

        fn on_policy_error(&mut self, e: &str) {
            self.pipe.on_policy_error(e)
        }

        fn tick(&mut self, now: i64) -> TickOutput {
            let out = self.pipe.tick(now, &mut self.events);
            self.record(out)
        }

        fn instruction(&self) -> Option<&str> {
            self.pipe.instruction()
        }
    }

    struct Rig {
        core: Counted,
        decoder: ImageDecoder,
        stats: SharedStats,
        names: Vec<String>,
    }

    impl Rig {
        fn new() -> Self {
            Rig::with_config(config())
        }

        fn with_config(cfg: Config) -> Self {
            let stats: SharedStats = Arc::new(Mutex::new(Stats::default()));
            let meta = meta();
            Rig {
                core: Counted {
                    pipe: Pipeline::new(&cfg, &meta, meta.tokenizer.as_ref().map(|t| Tokenizer::new(t, None).unwrap())),
                    stats: stats.clone(),
                    names: InputNames::new(&cfg.camera_names),
                    events: Events::new(),
                },
                decoder: ImageDecoder::new(&cfg, &meta),
                stats,
                names: vec!["b".into(), "a".into()],
            }
        }

        fn image(&mut self, cam: usize, t: i64, encoding: &str) -> Vec<Observation> {
            let img = Arc::new(CameraImage {
                stamp: t,
                frame_id: format!("cam{cam}"),
                width: 4,
                height: 4,
                encoding: encoding.into(),
                step: 12,
                data: vec![cam as u8 * 50; 4 * 4 * 3].into(),
            });
            let d = self.decoder.decode(cam, &img.raw());
            self.core.on_image(cam, img, t, d)
        }

        fn joints(&mut self, t: i64, a: f64) {
            let names = self.names.clone();
            self.core.on_joint_state(t, t, &names, &[0.0, a]);
        }

        /// Feeds both cameras and joints at `t` and returns the observations.
        fn frame(&mut self, t: i64) -> Vec<Observation> {
            self.joints(t, 0.0);
            let mut obs = self.image(0, t, "rgb8");
            obs.extend(self.image(1, t + MS, "rgb8"));
            obs
        }
    }

    #[test]
    fn observations_need_an_instruction_and_carry_state_and_images() {
        let mut r = Rig::new();
        // Frames 33 ms apart, and the inter-message bound of the default configuration:
        // each set is complete as soon as its last frame arrives. (Stamp 0 would be
        // rejected as not set.)
        for t in [1, 34, 67] {
            assert!(r.frame(t * MS).is_empty());
        }
        let key = ("camera/main/image_raw".to_owned(), "no instruction yet".to_owned());
        assert_eq!(r.stats.lock().unwrap().dropped.get(&key), Some(&3));
        r.core.on_instruction("  pick up the ball ");
        assert_eq!(r.core.instruction(), Some("pick up the ball"));
        let obs = r.frame(100 * MS);
        assert_eq!(obs.len(), 1);
        let o = &obs[0];
        assert_eq!(o.stamp, 101 * MS);
        assert_eq!(o.state, vec![0.0, 0.0]);
        assert_eq!(o.images.len(), 2 * 2 * 2 * 3);
        assert_eq!(&o.images[..3], &[0, 0, 0]);
        assert_eq!(&o.images[12..15], &[50, 50, 50]);
        assert_eq!(o.instruction_seq, 1);
        assert_eq!(o.cameras.iter().map(|c| c.stamp).collect::<Vec<_>>(), vec![100 * MS, 101 * MS]);
        assert_eq!(o.cameras[1].rgb().unwrap().get_pixel(3, 3).0, [50, 50, 50]);
        let st = r.stats.lock().unwrap();
        assert_eq!(st.used["camera/main/image_raw"], 1);
        assert_eq!(st.received["camera/main/image_raw"], 4);
    }

    #[test]
    fn bad_instructions_are_rejected_and_the_previous_one_stays() {
        let mut r = Rig::new();
        r.core.on_instruction("go left");
        for bad in ["", "   ", "go\u{7}left", &"x".repeat(17)] {
            r.core.on_instruction(bad);
            assert_eq!(r.core.instruction(), Some("go left"));
        }
        let st = r.stats.lock().unwrap();
        assert_eq!(st.received["instruction"], 5);
        assert_eq!(st.used["instruction"], 1);
        assert_eq!(st.rejected_total(), 4);
    }

    #[test]
    fn instructions_without_a_known_token_are_rejected() {
        let mut r = Rig::new();
        r.core.on_instruction("go left");
        for bad in ["🤖", " 🤖 🦾 ", "\u{200b}", "\u{3000}😀\u{3000}😀"] {
            r.core.on_instruction(bad);
            assert_eq!(r.core.instruction(), Some("go left"), "{bad:?}");
        }
        // One known character among unknown ones is an instruction.
        r.core.on_instruction("🤖 go");
        assert_eq!(r.core.instruction(), Some("🤖 go"));
        let st = r.stats.lock().unwrap();
        let key = ("instruction".to_owned(), "instruction has no token in the policy's vocabulary".to_owned());
        assert_eq!(st.rejected.get(&key), Some(&4));
        assert_eq!(st.used["instruction"], 2);
    }

    #[test]
    fn unset_and_far_future_stamps_are_rejected_and_do_not_block_the_stream() {
        let mut r = Rig::new();
        let t = 1_000 * MS;
        let names = r.names.clone();
        // Not set; an hour ahead of the clock (max_stamp_lead_s is 1 s by default).
        r.core.on_joint_state(0, t, &names, &[0.0, 0.0]);
        r.core.on_joint_state(-5, t, &names, &[0.0, 0.0]);
        r.core.on_joint_state(t + 3_600_000 * MS, t, &names, &[0.0, 0.0]);
        r.core.on_image(0, Arc::new(image_at(0)), t, Ok(vec![0; 12]));
        r.core.on_image(0, Arc::new(image_at(t + 3_600_000 * MS)), t, Ok(vec![0; 12]));
        // Within the lead, and later stamps of the same streams: used.
        r.core.on_joint_state(t + 500 * MS, t, &names, &[0.0, 0.0]);
        r.core.on_joint_state(t + 510 * MS, t, &names, &[0.0, 0.0]);
        r.core.on_image(0, Arc::new(image_at(t)), t, Ok(vec![0; 12]));
        // Before a simulated clock starts (now 0), any set stamp is taken.
        r.core.on_image(1, Arc::new(image_at(t)), 0, Ok(vec![0; 12]));
        let st = r.stats.lock().unwrap();
        let count = |topic: &str, reason: &str| st.rejected.get(&(topic.to_owned(), reason.to_owned())).copied();
        assert_eq!(count("joint_states", "stamp not set (zero or negative)"), Some(2));
        assert_eq!(count("joint_states", "stamp ahead of the clock by more than max_stamp_lead_s"), Some(1));
        assert_eq!(count("camera/main/image_raw", "stamp not set (zero or negative)"), Some(1));
        assert_eq!(count("camera/main/image_raw", "stamp ahead of the clock by more than max_stamp_lead_s"), Some(1));
        assert_eq!(st.used["joint_states"], 2);
        assert_eq!(st.rejected_total(), 5);
    }

    fn image_at(stamp: i64) -> CameraImage {
        CameraImage { stamp, frame_id: String::new(), width: 4, height: 4, encoding: "rgb8".into(), step: 12, data: vec![0; 48].into() }
    }

    #[test]
    fn bad_images_are_counted_and_do_not_refresh_the_camera() {
        let mut r = Rig::new();
        assert!(r.image(0, 0, "yuv422").is_empty());
        let out = r.core.tick(0);
        assert_eq!(out.state, ControlState::Stale { topic: "camera/main/image_raw".into(), never: true });
        assert_eq!(out.command, None);
        let st = r.stats.lock().unwrap();
        assert_eq!(st.rejected_total(), 1);
        assert_eq!(st.rejected.keys().next().unwrap().1, "unsupported encoding");
    }

    /// Runs inputs every 10 ms and ticks every 10 ms, with a chunk of constant `target`
    /// for each observation; returns the commands.
    fn drive(r: &mut Rig, from: i64, to: i64, target: f64, silent_camera_after: Option<i64>) -> Vec<(i64, TickOutput)> {
        let mut outs = Vec::new();
        let mut t = from;
        while t < to {
            r.joints(t, 0.0);
            let mut obs = r.image(0, t, "rgb8");
            if silent_camera_after.is_none_or(|s| t < s) {
                obs.extend(r.image(1, t + MS, "rgb8"));
            }
            for o in obs {
                r.core.on_chunk(o.stamp, o.arrival, o.instruction_seq, &vec![vec![target, -target]; 10]);
            }
            outs.push((t, r.core.tick(t)));
            t += 10 * MS;
        }
        outs
    }

    #[test]
    fn commands_are_step_limited_then_hold_when_a_camera_goes_silent_then_resume() {
        let mut r = Rig::new();
        r.core.on_instruction("go");
        let outs = drive(&mut r, 0, 300 * MS, 0.5, None);
        let cmds: Vec<_> = outs.iter().filter_map(|(_, o)| o.command.clone()).collect();
        assert!(!cmds.is_empty());
        // Ramps by at most 0.1 per tick from the measured state, towards 0.5 / -0.5.
        for w in cmds.windows(2) {
            assert!((w[1][0] - w[0][0]).abs() <= 0.1 + 1e-12);
        }
        assert_eq!(cmds.last().unwrap(), &vec![0.5, -0.5]);
        assert_eq!(outs.last().unwrap().1.state, ControlState::Running);

        // Camera 1 stops: after its timeout the node holds the last command.
        let outs = drive(&mut r, 300 * MS, 600 * MS, 0.9, Some(300 * MS));
        let stale = outs.iter().find(|(_, o)| matches!(o.state, ControlState::Stale { .. })).expect("goes stale");
        assert!(stale.0 > 300 * MS + 100 * MS - 20 * MS, "stale only after camera_timeout_s");
        assert!(stale.1.state_changed);
        let held: Vec<_> = outs.iter().filter(|(_, o)| o.state.is_hold()).map(|(_, o)| o.command.clone().unwrap()).collect();
        assert!(held.windows(2).all(|w| w[0] == w[1]), "hold means hold");
        assert!(outs.last().unwrap().1.state.level() == 2);

        // It returns: the node resumes towards the new target.
        let outs = drive(&mut r, 600 * MS, 900 * MS, 0.9, None);
        assert_eq!(outs.last().unwrap().1.state, ControlState::Running);
        assert_eq!(outs.last().unwrap().1.command, Some(vec![0.9, -0.9]));
    }

    #[test]
    fn a_new_instruction_discards_queued_actions_of_the_old_one() {
        let mut r = Rig::new();
        r.core.on_instruction("one");
        drive(&mut r, 0, 200 * MS, 0.3, None);
        r.core.on_instruction("two");
        // A late chunk of the first instruction is discarded...
        r.core.on_chunk(200 * MS, 200 * MS, 1, &vec![vec![-0.9, -0.9]; 10]);
        assert_eq!(r.stats.lock().unwrap().dropped[&("policy".into(), "chunk computed for a previous instruction".into())], 1);
        // ...and the queued actions go at the first chunk of the second.
        r.core.on_chunk(200 * MS, 200 * MS, 2, &vec![vec![0.35, 0.0]; 2]);
        let out = r.core.tick(210 * MS).command.unwrap();
        // From (0.3, -0.3): joint a to 0.35, joint b one 0.1 step towards 0.
        assert!((out[0] - 0.35).abs() < 1e-12 && (out[1] + 0.2).abs() < 1e-12, "{out:?}");
    }

    #[test]
    fn policy_faults_and_non_finite_actions_hold() {
        let mut r = Rig::new();
        r.core.on_instruction("go");
        drive(&mut r, 0, 100 * MS, 0.2, None);
        let before = r.core.tick(100 * MS).command.unwrap();
        r.core.on_policy_error("boom");
        let out = r.core.tick(110 * MS);
        assert_eq!(out.state, ControlState::PolicyFault("boom".into()));
        assert_eq!(out.command.unwrap(), before);
        // A NaN action is refused by the safety filter: hold, and counted.
        r.core.on_chunk(110 * MS, 110 * MS, 1, &vec![vec![f64::NAN, 0.0]; 10]);
        let out = r.core.tick(120 * MS);
        assert!(matches!(out.state, ControlState::PolicyFault(_)));
        assert_eq!(out.command.unwrap(), before);
    }

    #[test]
    fn clock_jump_backwards_resets_and_holds() {
        let mut r = Rig::new();
        r.core.on_instruction("go");
        drive(&mut r, 1000 * MS, 1200 * MS, 0.2, None);
        let out = r.core.tick(0);
        assert_eq!(out.state, ControlState::ClockJump);
        let out = r.core.tick(10 * MS);
        assert!(matches!(out.state, ControlState::Stale { never: true, .. }));
        let outs = drive(&mut r, 20 * MS, 200 * MS, 0.2, None);
        assert_eq!(outs.last().unwrap().1.state, ControlState::Running);

        // Enabled late on one time line, then the clock jumps back: the inputs of the
        // new time line are executed.
        r.core.pipe.set_enabled(false, 200 * MS);
        r.core.pipe.set_enabled(true, 5000 * MS);
        r.core.tick(5000 * MS);
        let outs = drive(&mut r, 0, 300 * MS, 0.4, None);
        assert_eq!(outs.last().unwrap().1.state, ControlState::Running);
    }

    #[test]
    fn disabled_holds_and_executes_nothing_from_before_it_was_enabled() {
        let mut r = Rig::new();
        r.core.on_instruction("go");
        drive(&mut r, 0, 200 * MS, 0.3, None);
        assert!(r.core.pipe.set_enabled(false, 200 * MS));
        assert!(!r.core.pipe.set_enabled(false, 205 * MS), "no change");
        let outs = drive(&mut r, 200 * MS, 400 * MS, 0.8, None);
        assert!(outs.iter().all(|(_, o)| o.state == ControlState::Disabled && o.command == Some(vec![0.3, -0.3])), "{outs:?}");
        assert_eq!(outs[0].1.state.level(), 1);
        // Enabled again: a chunk from inputs that came before is not executed.
        r.core.pipe.set_enabled(true, 400 * MS);
        r.core.on_chunk(395 * MS, 395 * MS, 1, &vec![vec![-0.9, 0.9]; 10]);
        let out = r.core.tick(400 * MS);
        assert_eq!((out.state, out.command), (ControlState::WaitingForActions, Some(vec![0.3, -0.3])));
        let dropped = r.stats.lock().unwrap().dropped[&("policy".into(), "chunk computed from inputs of a disabled node".into())];
        assert!(dropped >= 20, "every chunk while disabled, and the one from before: {dropped}");
        let outs = drive(&mut r, 410 * MS, 700 * MS, 0.8, None);
        assert_eq!(outs.last().unwrap().1.command, Some(vec![0.8, -0.8]));
    }

    #[test]
    fn tasks_start_afresh_and_clearing_the_instruction_holds() {
        let mut r = Rig::new();
        r.core.on_instruction("go");
        drive(&mut r, 0, 200 * MS, 0.3, None);
        // The same text as a task is a new instruction: chunks from before are not its.
        assert_eq!(r.core.pipe.start_task(" go ", &mut r.core.events), Ok(2));
        assert!(r.core.pipe.start_task("", &mut r.core.events).unwrap_err().contains("empty instruction"));
        assert_eq!(r.core.pipe.instruction_seq(), Some(2));
        r.core.on_chunk(200 * MS, 200 * MS, 1, &vec![vec![-0.9, 0.9]; 10]);
        let outs = drive(&mut r, 210 * MS, 300 * MS, 0.5, None);
        let running: Vec<_> = outs.iter().filter(|(_, o)| o.state == ControlState::Running).collect();
        assert!(!running.is_empty() && running.iter().all(|(_, o)| o.instruction_seq == Some(2)));
        assert_eq!(outs.last().unwrap().1.command, Some(vec![0.5, -0.5]));

        r.core.pipe.clear_instruction();
        let out = r.core.tick(300 * MS);
        assert_eq!((out.state, out.command, out.instruction_seq), (ControlState::WaitingForInstruction, Some(vec![0.5, -0.5]), None));
        // A late chunk of the cleared instruction is not executed.
        r.core.on_chunk(300 * MS, 300 * MS, 2, &vec![vec![0.9, 0.9]; 10]);
        assert_eq!(r.core.tick(310 * MS).command, Some(vec![0.5, -0.5]));
        // Re-anchored (after a dry run): nothing goes out until the next command, which
        // starts from the measured state (0, 0) one step at most.
        r.core.pipe.reanchor();
        assert_eq!(r.core.tick(320 * MS).command, None);
        r.core.on_instruction("again");
        let outs = drive(&mut r, 330 * MS, 400 * MS, 0.5, None);
        let first = outs.iter().find_map(|(_, o)| o.command.clone()).unwrap();
        assert!((first[0] - 0.1).abs() < 1e-12 && (first[1] + 0.1).abs() < 1e-12, "{first:?}");
    }

    #[test]
    fn trajectories_carry_the_plan_and_the_ticks_between_execute_it() {
        // 100 Hz control, a trajectory of 4 points every 2 ticks (50 Hz).
        let cfg = Config { command_type: crate::core::config::CommandType::JointTrajectory, trajectory_horizon: 4, trajectory_rate_hz: 50.0, ..config() };
        let mut r = Rig::with_config(cfg);
        r.core.on_instruction("go");
        let mut outs = Vec::new();
        for k in 1..51i64 {
            let t = k * 10 * MS;
            r.joints(t, 0.0);
            let mut obs = r.image(0, t, "rgb8");
            if k < 30 {
                obs.extend(r.image(1, t + MS, "rgb8"));
            }
            // Every chunk holds the same ramp, 0.03 a tick for joint a: the plan is known.
            // (20 actions: the last chunk lasts until the camera's silence is a hold.)
            for o in obs {
                let actions: Vec<Vec<f64>> = (k..k + 20).map(|j| vec![0.03 * j as f64, 0.0]).collect();
                r.core.on_chunk(o.stamp, o.arrival, o.instruction_seq, &actions);
            }
            outs.push(r.core.tick(t));
        }
        let first = outs.iter().position(|o| o.state == ControlState::Running).unwrap();
        let stale = outs.iter().position(|o| matches!(o.state, ControlState::Stale { .. })).unwrap();
        let running = &outs[first..stale];
        assert!(running.len() > 10 && running.iter().all(|o| o.state == ControlState::Running));
        for (i, o) in running.iter().enumerate() {
            assert_eq!(o.publish, i % 2 == 0, "tick {i}");
            if !o.publish {
                assert!(o.plan.is_empty());
                continue;
            }
            // Three planned commands after its own, each one step at most from the one
            // before and within the limits; the next tick executes the first.
            assert_eq!(o.plan.len(), 3, "tick {i}");
            let mut previous = o.command.clone().unwrap();
            for p in &o.plan {
                assert!((p[0] - previous[0]).abs() <= 0.1 + 1e-12 && p[0] <= 1.0, "{p:?}");
                previous = p.clone();
            }
            if let Some(next) = running.get(i + 1) {
                assert_eq!(next.command.as_ref(), Some(&o.plan[0]));
            }
        }
        // The hold goes out at once, with no plan, and then every second tick.
        assert!(outs[stale].publish && outs[stale].plan.is_empty() && outs[stale].state_changed);
        let held: Vec<bool> = outs[stale..].iter().map(|o| o.publish).collect();
        assert_eq!(held[..5], [true, false, true, false, true]);
    }
}
