//! The pipeline without ROS, files or threads: camera frames, joint states and
//! instructions in; observations for the policy out; chunks from the policy in; one safe
//! command per control tick out. The live node and the bag replay drive this same type
//! (through [`super::driver::Driver`]).
//!
//! Time is an input everywhere: `now` is the node's clock (sim time under
//! `use_sim_time`, bag time in a replay), stamps are the messages' own. Nothing here
//! counts or logs: every method reports what happened as [`Event`]s into the caller's
//! buffer, which the caller turns into counters and log lines ([`super::stats::Stats`]).

use std::fmt;
use std::sync::Arc;

use crate::core::config::{secs_to_ns, Config};
use crate::core::control::safety::{Clipped, SafetyFilter};
use crate::core::control::smoothing::Smoother;
use crate::core::inputs::image::ImageError;
use crate::core::inputs::joints::JointBuffer;
use crate::core::inputs::tokenizer::{CharTokenizer, Tokens};
use crate::core::inputs::CameraImage;
use crate::core::sync::ApproximateTimeSync;
use crate::core::topics::Input;
use crate::core::contract::PolicyMeta;

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
    /// A synchronized camera set was paired with a joint state and an instruction.
    Observation,
    /// A command went out; `hold` when it repeated the previous one.
    Command { hold: bool, clipped: Clipped },
    /// A new instruction took effect; `unknown` tokens are outside the vocabulary.
    NewInstruction { text: Arc<str>, seq: u64, unknown: usize },
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
    /// Cameras x height x width x 3, RGB, at the policy's size.
    pub images: Vec<u8>,
    /// Joint positions in the configured order, nearest the set's stamp.
    pub state: Vec<f64>,
    pub instruction: Arc<str>,
    pub tokens: Arc<Tokens>,
    /// Increases with every new instruction.
    pub instruction_seq: u64,
    /// The camera images of the set, in camera order.
    pub cameras: Vec<Arc<CameraImage>>,
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
}

impl ControlState {
    /// Diagnostic level: 0 OK, 1 WARN, 2 ERROR.
    pub fn level(&self) -> u8 {
        match self {
            ControlState::Running => 0,
            ControlState::WaitingForInstruction | ControlState::WaitingForActions | ControlState::ClockJump => 1,
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
        }
    }
}

/// What one control tick decided.
#[derive(Debug, Clone, PartialEq)]
pub struct TickOutput {
    /// The command to publish; `None` until the node has commanded anything (holding
    /// before the first command means sending nothing).
    pub command: Option<Vec<f64>>,
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
    sync: ApproximateTimeSync<Frame>,
    joints: JointBuffer,
    tokenizer: CharTokenizer,
    instruction: Option<Instruction>,
    /// Arrival of the last valid message per input: cameras, then joint_states.
    last_arrival: Vec<Option<i64>>,
    timeouts: Vec<i64>,
    joint_tolerance: i64,
    /// How far ahead of `now` a stamp may lie (max_stamp_lead_s).
    max_stamp_lead: i64,
    period: i64,
    smoother: Smoother,
    safety: SafetyFilter,
    tick_base: Option<i64>,
    last_now: Option<i64>,
    last_command: Option<Vec<f64>>,
    policy_fault: Option<String>,
    chunk_seq: u64,
    newest_chunk: Option<i64>,
    state: ControlState,
    clock_jumped: bool,
}

impl Pipeline {
    /// A pipeline for `cfg` and a policy described by `meta`, which must have passed
    /// [`PolicyMeta::differences`] against `cfg` (its tokenizer is valid).
    pub fn new(cfg: &Config, meta: &PolicyMeta) -> Self {
        let n = cfg.camera_names.len();
        let mut timeouts = vec![secs_to_ns(cfg.camera_timeout_s); n];
        timeouts.push(secs_to_ns(cfg.joint_state_timeout_s));
        Pipeline {
            camera_topics: cfg.camera_names.iter().map(|c| crate::core::topics::camera(c)).collect(),
            sync: ApproximateTimeSync::new(n, cfg.sync_queue_size, secs_to_ns(cfg.sync_max_interval_s), cfg.sync_age_penalty)
                .with_inter_message_lower_bound(secs_to_ns(cfg.sync_inter_message_lower_bound_s)),
            joints: JointBuffer::new(cfg.joint_names.clone()),
            // Checked when the policy was loaded (PolicyMeta::differences).
            tokenizer: CharTokenizer::new(meta.tokenizer.clone()).expect("checked when the policy was loaded"),
            instruction: None,
            last_arrival: vec![None; n + 1],
            timeouts,
            joint_tolerance: secs_to_ns(cfg.joint_state_tolerance_s),
            max_stamp_lead: secs_to_ns(cfg.max_stamp_lead_s),
            period: cfg.control_period_ns(),
            smoother: Smoother::new(cfg.smoothing()),
            safety: SafetyFilter::new(
                cfg.joint_lower_limits.clone(),
                cfg.joint_upper_limits.clone(),
                cfg.max_step_per_tick.clone(),
            ),
            tick_base: None,
            last_now: None,
            last_command: None,
            policy_fault: None,
            chunk_seq: 0,
            newest_chunk: None,
            state: ControlState::WaitingForInstruction,
            clock_jumped: false,
        }
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
        out.sets.into_iter().filter_map(|set| self.observe(set, events)).collect()
    }

    fn observe(&mut self, set: Vec<(i64, Frame)>, events: &mut Events) -> Option<Observation> {
        let cameras = (0..self.camera_topics.len()).map(Input::Camera);
        // The synchronizer emits one frame per camera, never an empty set.
        let stamp = set.iter().map(|(s, _)| *s).max().expect("sets are not empty");
        let reason = match (&self.instruction, self.joints.nearest(stamp, self.joint_tolerance)) {
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
                    state: q.to_vec(),
                    instruction: instr.text.clone(),
                    tokens: instr.tokens.clone(),
                    instruction_seq: instr.seq,
                    cameras: set.iter().map(|(_, f)| f.source.clone()).collect(),
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

    /// A new instruction. Empty ones, ones longer than the policy's token limit, ones
    /// holding control characters and ones with no token in the policy's vocabulary
    /// (only emoji, say) are rejected (and counted); the previous instruction stays in
    /// effect.
    pub fn on_instruction(&mut self, text: &str, events: &mut Events) {
        let input = Input::Instruction;
        events.push(Event::Received(input));
        let trimmed = text.trim();
        let n = trimmed.chars().count();
        let reject = if trimmed.is_empty() {
            Some(("empty instruction", String::new()))
        } else if trimmed.chars().any(|c| c.is_control() && !c.is_whitespace()) {
            Some(("instruction holds control characters", format!("{trimmed:?}")))
        } else if n > self.tokenizer.max_length() {
            let detail = format!("{n} characters, the policy takes {}", self.tokenizer.max_length());
            Some(("instruction longer than the policy's token limit", detail))
        } else {
            None
        };
        if let Some((reason, detail)) = reject {
            events.push(Event::Rejected { input, reason, detail: format!("{reason}: {detail}") });
            return;
        }
        if self.instruction.as_ref().is_some_and(|i| &*i.text == trimmed) {
            events.push(Event::Used(input));
            return;
        }
        let tokens = self.tokenizer.encode(trimmed);
        // Every real token unknown or blank: the policy would act on no word at all.
        let blank = tokens.pieces.iter().filter(|p| p.trim().is_empty()).count();
        if tokens.unknown + blank >= tokens.pieces.len() {
            let reason = "instruction has no token in the policy's vocabulary";
            events.push(Event::Rejected { input, reason, detail: format!("{reason}: {trimmed:?}") });
            return;
        }
        events.push(Event::Used(input));
        let seq = self.instruction.as_ref().map_or(1, |i| i.seq + 1);
        let text: Arc<str> = trimmed.into();
        events.push(Event::NewInstruction { text: text.clone(), seq, unknown: tokens.unknown });
        self.instruction = Some(Instruction { text, tokens: Arc::new(tokens), seq });
    }

    pub fn instruction(&self) -> Option<&str> {
        self.instruction.as_ref().map(|i| &*i.text)
    }

    fn tick_index(&self, t: i64) -> i64 {
        let base = self.tick_base.unwrap_or(t);
        ((t - base) as f64 / self.period as f64).round() as i64
    }

    /// A chunk computed from the observation of stamp `obs_stamp` that was complete at
    /// `obs_arrival`. Chunks of an older instruction are discarded; the first chunk of a
    /// new instruction discards every queued action of the old one.
    pub fn on_chunk(&mut self, obs_stamp: i64, obs_arrival: i64, instruction_seq: u64, actions: &[Vec<f64>], events: &mut Events) {
        let current = self.instruction.as_ref().map_or(0, |i| i.seq);
        if instruction_seq < current {
            events.push(Event::Dropped(Input::Policy, "chunk computed for a previous instruction"));
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
        if self.instruction.is_none() {
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
        let mut state = if self.clock_jumped { ControlState::ClockJump } else { self.input_state(now) };
        let mut smoothed = None;
        if state == ControlState::Running {
            let tick = self.tick_index(now);
            match self.smoother.action_for(tick) {
                None => state = ControlState::WaitingForActions,
                Some(target) => {
                    smoothed = Some(target.clone());
                    state = self.command(&target, events);
                }
            }
        }
        if state.is_hold() {
            if !matches!(state, ControlState::WaitingForActions) {
                // Nothing computed before a hold may run after it.
                self.smoother.reset();
            }
            if self.last_command.is_some() {
                events.push(Event::Command { hold: true, clipped: Clipped::default() });
            }
        }
        self.clock_jumped = false;
        let state_changed = state != self.state;
        self.state = state.clone();
        TickOutput {
            command: self.last_command.clone(),
            source: if state.is_hold() { None } else { self.newest_chunk },
            target: if state.is_hold() { None } else { smoothed },
            state,
            state_changed,
        }
    }

    /// The safety filter's command for `target`, from the previous command (or, before
    /// the first, the measured state); the state it leaves the node in.
    fn command(&mut self, target: &[f64], events: &mut Events) -> ControlState {
        let previous = self.last_command.clone().or_else(|| self.joints.latest().map(<[f64]>::to_vec));
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
    use crate::core::inputs::tokenizer::TokenizerSpec;
    use crate::core::inputs::ImageDecoder;
    use crate::core::stats::{SharedStats, Stats};
    use crate::core::topics::InputNames;
    use crate::core::contract::Normalization;

    const MS: i64 = 1_000_000;

    fn meta() -> PolicyMeta {
        PolicyMeta {
            contract_version: 1,
            name: "test".into(),
            camera_names: vec!["main".into(), "side".into()],
            image_height: 2,
            image_width: 2,
            patch_grid: [12, 16],
            joint_names: vec!["a".into(), "b".into()],
            action_dim: 2,
            chunk_length: 10,
            control_rate_hz: 100.0,
            tokenizer: TokenizerSpec {
                kind: "char".into(),
                vocab: "abcdefghijklmnopqrstuvwxyz ".into(),
                max_length: 16,
                pad_id: 0,
                unk_id: 1,
                lowercase: true,
            },
            normalization: Normalization {
                state_mean: vec![0.0; 2],
                state_std: vec![1.0; 2],
                action_mean: vec![0.0; 2],
                action_std: vec![1.0; 2],
            },
        }
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
            self.pipe.on_chunk(stamp, arrival, seq, actions, &mut self.events);
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
            let stats: SharedStats = Arc::new(Mutex::new(Stats::default()));
            let (cfg, meta) = (config(), meta());
            Rig {
                core: Counted {
                    pipe: Pipeline::new(&cfg, &meta),
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
            let d = self.decoder.decode(&img.raw());
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
    }
}
