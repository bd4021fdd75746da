//! The one driver of the pipeline, for the live node and the bag replay alike: a camera
//! set in, inference, the chunk handed to the pipeline, the explanation, and every
//! output as a value ([`Output`]). The two adapters differ only in how they schedule
//! these steps (threads and timers, or the recording's clock) and where the outputs go
//! (publishers, or a bag writer).
//!
//! The driver also carries what the operator changes while the node runs: enabled or
//! not, dry run or not, and the task (a goal of the action) in progress.
//!
//! The pipeline is passed in behind a mutex, which the node shares between its threads
//! and the replay holds alone; every step counts what it did in the driver's stats.
//! Where several are locked at once, the order is: task, pipeline, stats.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures::channel::oneshot;

use crate::core::config::{secs_to_ns, CommandType, Config};
use crate::core::contract::PolicyKind;
use crate::core::control::limits::JointLimits;
use crate::core::health::{self, Feed, Thresholds};
use crate::core::inputs::{CameraImage, ImageDecoder};
use crate::core::pipeline::{ControlState, Events, Observation, Pipeline, TickOutput};
use crate::core::stats::{self, SharedStats, Stats};
use crate::core::task::{Outcome, Progress, SettleRule, Task};
use crate::core::topics::{Input, InputNames, NODE_NAME};
use crate::core::window::Recent;
use crate::error::Result;
use crate::explain::{self, Explanation, Settings};
use crate::policy::flow::Inpainting;
use crate::policy::{Batch, BatchTokens, PolicyOutput, PolicyRunner, Priority};

/// What the node sends out, as plain values; `crate::ros::msgs` turns them into messages.
#[derive(Debug, Clone)]
pub enum Output {
    /// The arm's command (`joint_names` without the gripper joints): the command of the
    /// tick at `stamp`, then for a multi-point trajectory the planned commands of the
    /// ticks after it, one control period apart.
    Command { stamp: i64, points: Vec<Vec<f64>>, kind: CommandType, joint_names: Arc<[String]>, period_ns: i64 },
    /// The gripper joints' command of one control tick, in `gripper_joints`' order of
    /// `joint_names`.
    Gripper { positions: Vec<f64> },
    /// The smoothed action about to be executed, before the safety filter.
    Predicted { stamp: i64, positions: Vec<f64>, joint_names: Arc<[String]> },
    /// The stamp of the newest camera set whose chunk a command uses.
    CommandSource { set_stamp: i64 },
    /// A new chunk as it will run: a command per tick from `start`, before smoothing.
    Chunk { start: i64, set_stamp: i64, commands: Vec<Vec<f64>>, joint_names: Arc<[String]>, period_ns: i64 },
    /// One explained inference.
    Explanation(Box<Explained>),
    /// The node's status, one per concern: the pipeline (its state and every counter)
    /// first, then the operator's controls, camera sync, input rates, inference.
    Diagnostics(Vec<Status>),
}

/// An inference with its explanation.
#[derive(Debug, Clone)]
pub struct Explained {
    pub obs: Observation,
    pub explanation: Explanation,
    /// The language heatmap's `attention_threshold`, published with the token weights.
    pub threshold: f32,
    pub camera_names: Arc<[String]>,
}

/// One diagnostic status.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub stamp: i64,
    /// `<node's full name>: <concern>`, e.g. `/vla_controller: pipeline`.
    pub name: String,
    /// 0 OK, 1 WARN, 2 ERROR.
    pub level: u8,
    pub message: String,
    pub values: Vec<(String, String)>,
}

/// How a task ended, for the action's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEnd {
    pub outcome: Outcome,
    pub elapsed_ns: i64,
    /// The last command, `joint_names` order (empty if there was none).
    pub command: Vec<f64>,
}

/// The task in progress and where its end goes.
struct ActiveTask {
    task: Task,
    done: oneshot::Sender<TaskEnd>,
}

/// Which joints go where: the arm's on the command topic, the gripper's on their own.
struct Split {
    arm: Vec<usize>,
    gripper: Vec<usize>,
    arm_names: Arc<[String]>,
}

impl Split {
    fn pick(indices: &[usize], v: &[f64]) -> Vec<f64> {
        indices.iter().map(|&i| v[i]).collect()
    }
}

pub struct Driver {
    policy: Arc<dyn PolicyRunner>,
    decoder: ImageDecoder,
    names: InputNames,
    joint_names: Arc<[String]>,
    camera_names: Arc<[String]>,
    split: Split,
    command_type: CommandType,
    period_ns: i64,
    dry_run: AtomicBool,
    /// Dry run was switched on: the next tick sends the last command sent once more, so
    /// that a trajectory controller stops there instead of finishing the plan.
    stop_pending: AtomicBool,
    last_sent: Mutex<Option<Vec<f64>>>,
    /// Real-time chunking's largest guidance weight.
    max_guidance_weight: f64,
    node_name: String,
    stats: SharedStats,
    task: Mutex<Option<ActiveTask>>,
    /// How many tasks ended, by outcome.
    outcomes: Mutex<BTreeMap<&'static str, u64>>,
    settle: SettleRule,
    thresholds: Thresholds,
    feeds: Vec<(String, Feed)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Driver {
    /// A driver for `cfg` and a policy that passed its checks against it.
    /// `node_name` is the node's fully qualified name, for /diagnostics.
    pub fn new(cfg: &Config, policy: Arc<dyn PolicyRunner>, node_name: &str) -> Self {
        if cfg.dry_run {
            tracing::warn!("dry_run: computing and explaining, publishing no commands");
        }
        if !cfg.start_enabled {
            tracing::warn!("start_enabled is false: holding until enabled through ~/enable");
        }
        let (arm, gripper) = cfg.arm_and_gripper();
        let names = InputNames::new(&cfg.camera_names);
        let feeds = names
            .subscribed()
            .filter_map(|(input, topic)| match input {
                Input::Camera(_) => Some((topic.to_owned(), Feed::Camera)),
                Input::JointStates => Some((topic.to_owned(), Feed::JointStates)),
                _ => None,
            })
            .collect();
        let stats = SharedStats::default();
        stats::lock(&stats).recent = Recent::new(secs_to_ns(cfg.diagnostics_window_s));
        Driver {
            decoder: ImageDecoder::new(cfg, policy.meta()),
            policy,
            names,
            joint_names: cfg.joint_names.clone().into(),
            camera_names: cfg.camera_names.clone().into(),
            split: Split { arm_names: arm.iter().map(|&i| cfg.joint_names[i].clone()).collect(), arm, gripper },
            command_type: cfg.command_type,
            period_ns: cfg.control_period_ns(),
            dry_run: AtomicBool::new(cfg.dry_run),
            stop_pending: AtomicBool::new(false),
            last_sent: Mutex::new(None),
            max_guidance_weight: cfg.rtc_max_guidance_weight,
            node_name: node_name.to_owned(),
            stats,
            task: Mutex::new(None),
            outcomes: Mutex::new(BTreeMap::new()),
            settle: SettleRule::from_config(cfg),
            thresholds: Thresholds::from_config(cfg),
            feeds,
        }
    }

    /// The full name of a node in the root namespace, as the replay names its status.
    pub fn default_node_name() -> String {
        format!("/{NODE_NAME}")
    }

    /// A new pipeline for `cfg` (the configuration the driver was made with), the
    /// driver's policy and the joint limits in force.
    pub fn pipeline(&self, cfg: &Config, limits: JointLimits) -> Mutex<Pipeline> {
        Mutex::new(Pipeline::new(cfg, self.policy.meta(), self.policy.tokenizer().cloned()).with_limits(limits))
    }

    pub fn stats(&self) -> &SharedStats {
        &self.stats
    }

    pub fn policy(&self) -> &Arc<dyn PolicyRunner> {
        &self.policy
    }

    pub fn joint_names(&self) -> &Arc<[String]> {
        &self.joint_names
    }

    fn count(&self, events: &mut Events) {
        stats::lock(&self.stats).record(&self.names, events);
    }

    fn stats_mut(&self) -> MutexGuard<'_, Stats> {
        stats::lock(&self.stats)
    }

    /// A camera image: decoded outside the pipeline's lock (the node calls this on the
    /// thread that received it), then synchronized. Returns the observations it
    /// completed.
    pub fn image(&self, pipe: &Mutex<Pipeline>, camera: usize, image: Arc<CameraImage>, now: i64) -> Vec<Observation> {
        let decoded = self.decoder.decode(camera, &image.raw());
        let mut events = Events::new();
        let observations = lock(pipe).on_image(camera, image, now, decoded, &mut events);
        self.count(&mut events);
        self.stats_mut().recent.arrival(self.names.topic(Input::Camera(camera)), now);
        observations
    }

    pub fn joint_state(&self, pipe: &Mutex<Pipeline>, stamp: i64, now: i64, names: &[String], positions: &[f64]) {
        let mut events = Events::new();
        lock(pipe).on_joint_state(stamp, now, names, positions, &mut events);
        self.count(&mut events);
        self.stats_mut().recent.arrival(self.names.topic(Input::JointStates), now);
    }

    /// An instruction from the topic. A new one preempts the task in progress.
    pub fn instruction(&self, pipe: &Mutex<Pipeline>, text: &str) {
        let mut events = Events::new();
        let new = lock(pipe).on_instruction(text, &mut events);
        self.count(&mut events);
        let Some(seq) = new else { return };
        let mut slot = lock(&self.task);
        if slot.as_ref().is_some_and(|a| a.task.seq() < seq) {
            let active = slot.take().expect("checked");
            self.end_task(pipe, active, Outcome::Preempted(format!("the instruction {:?} on the topic", text.trim())));
        }
    }

    /// Starts a task (a goal) at `now`: the instruction `text` until it settles, for at
    /// most `time_limit_ns` (0: no limit). It preempts the task in progress. Refused,
    /// with the reason, while disabled or for an instruction the topic would reject.
    /// Returns the task's id and where its end will be sent.
    pub fn start_task(&self, pipe: &Mutex<Pipeline>, text: &str, time_limit_ns: i64, now: i64) -> std::result::Result<(u64, oneshot::Receiver<TaskEnd>), String> {
        let mut slot = lock(&self.task);
        let mut events = Events::new();
        let started = {
            let mut p = lock(pipe);
            if p.enabled() { p.start_task(text, &mut events) } else { Err("the node is disabled (~/enable)".to_owned()) }
        };
        self.count(&mut events);
        let seq = started?;
        if let Some(old) = slot.take() {
            self.end_task(pipe, old, Outcome::Preempted("a new goal".into()));
        }
        let (done, end) = oneshot::channel();
        *slot = Some(ActiveTask { task: Task::new(seq, now, time_limit_ns, self.settle), done });
        tracing::info!(task = seq, instruction = text.trim(), time_limit_s = time_limit_ns as f64 / 1e9, "task started");
        Ok((seq, end))
    }

    /// Cancels task `id` if it is in progress; the arm holds.
    pub fn cancel_task(&self, pipe: &Mutex<Pipeline>, id: u64) -> bool {
        let mut slot = lock(&self.task);
        if slot.as_ref().is_none_or(|a| a.task.seq() != id) {
            return false;
        }
        let active = slot.take().expect("checked");
        self.end_task(pipe, active, Outcome::Cancelled);
        true
    }

    /// The progress of task `id`, while it is in progress.
    pub fn task_progress(&self, id: u64) -> Option<Progress> {
        lock(&self.task).as_ref().filter(|a| a.task.seq() == id).map(|a| a.task.progress().clone())
    }

    /// Ends a task: the arm holds unless it was preempted; its end goes to whoever
    /// waits for it. Called with the task locked.
    fn end_task(&self, pipe: &Mutex<Pipeline>, active: ActiveTask, outcome: Outcome) {
        let seq = active.task.seq();
        if outcome.holds() {
            let mut p = lock(pipe);
            if p.instruction_seq() == Some(seq) {
                p.clear_instruction();
            }
        }
        *lock(&self.outcomes).entry(outcome.kind()).or_default() += 1;
        let progress = active.task.progress();
        tracing::info!(task = seq, elapsed_s = progress.elapsed_ns as f64 / 1e9, "task ended: {}", outcome.message());
        // The receiver is gone when the goal's client went away: nothing to tell.
        let _ = active.done.send(TaskEnd { elapsed_ns: progress.elapsed_ns, command: progress.command.clone(), outcome });
    }

    /// Enables or disables the node at `now` (disabled, it holds and executes nothing
    /// new); returns what happened, in words.
    pub fn set_enabled(&self, pipe: &Mutex<Pipeline>, enabled: bool, now: i64) -> String {
        let changed = lock(pipe).set_enabled(enabled, now);
        let message = match (enabled, changed) {
            (true, true) => "enabled: executing the policy's actions again",
            (false, true) => "disabled: holding position, nothing new executed",
            (true, false) => "already enabled",
            (false, false) => "already disabled",
        };
        if changed {
            tracing::warn!("{message}");
        }
        message.to_owned()
    }

    /// Switches dry run. On, commands stop going out (one last command repeats the last
    /// one sent, to stop a trajectory controller there); off, the next command starts
    /// from the measured joint state, not from what the dry run computed.
    pub fn set_dry_run(&self, pipe: &Mutex<Pipeline>, on: bool) {
        if self.dry_run.swap(on, Ordering::AcqRel) == on {
            return;
        }
        if on {
            self.stop_pending.store(true, Ordering::Release);
            tracing::warn!("dry_run on: computing and explaining, publishing no commands");
        } else {
            lock(pipe).reanchor();
            tracing::warn!("dry_run off: commands go out again, from the measured joint state");
        }
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run.load(Ordering::Acquire)
    }

    /// Whether to infer `obs` now (real-time chunking waits for its execution horizon,
    /// counted); prepares what of the running chunk the inference keeps.
    pub fn prepare(&self, pipe: &Mutex<Pipeline>, obs: &mut Observation) -> bool {
        let mut events = Events::new();
        let infer = lock(pipe).prepare(obs, &mut events);
        self.count(&mut events);
        infer
    }

    /// One inference on the control path, timed and counted; a flow-matching policy
    /// starts from noise seeded with the camera set's stamp (and, with real-time
    /// chunking, is steered towards the running chunk). A chunk with a non-finite action
    /// is an error, whatever the runner.
    pub fn infer(&self, obs: &Observation) -> Result<PolicyOutput> {
        let t0 = Instant::now();
        let inpainting = match (self.policy.meta().kind, &obs.inpaint) {
            (PolicyKind::Flow(spec), Some(inpaint)) if !inpaint.prefix.is_empty() => {
                Some(Inpainting::new(self.policy.meta(), spec, inpaint, self.max_guidance_weight))
            }
            _ => None,
        };
        let batch = Batch {
            images: &obs.images,
            size: 1,
            state: &obs.state,
            tokens: BatchTokens::Shared(&obs.tokens),
            seed: obs.stamp as u64,
            inpainting: inpainting.as_ref(),
        };
        let result = self
            .policy
            .infer_batch(&batch, Priority::Control)
            .and_then(|mut out| out.pop().ok_or_else(|| crate::Error::Inference("no output for a batch of one".into())))
            .and_then(PolicyOutput::finite);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let mut st = self.stats_mut();
        match &result {
            Ok(_) => {
                st.inferred(ms);
                st.recent.latency.push(obs.arrival, ms);
            }
            Err(e) => st.inference_failed(&e.to_string()),
        }
        result
    }

    /// Hands an inference's result to the pipeline at `now`: the chunk (then in
    /// `outputs` as it will run), or the failure (the node holds until the next good
    /// chunk).
    pub fn apply(&self, pipe: &Mutex<Pipeline>, obs: &Observation, result: &Result<PolicyOutput>, now: i64, outputs: &mut Vec<Output>) {
        let mut events = Events::new();
        match result {
            Ok(out) => {
                if let Some(chunk) = lock(pipe).on_chunk(obs, &out.actions, now, &mut events) {
                    outputs.push(Output::Chunk {
                        start: chunk.start,
                        set_stamp: obs.stamp,
                        commands: chunk.commands,
                        joint_names: self.joint_names.clone(),
                        period_ns: self.period_ns,
                    });
                }
            }
            Err(e) => lock(pipe).on_policy_error(&e.to_string()),
        }
        self.count(&mut events);
    }

    /// Explains an inference (timed and counted); `None` when it failed (counted and
    /// logged).
    pub fn explain(&self, obs: Observation, out: &PolicyOutput, settings: &Settings) -> Option<Output> {
        let t0 = Instant::now();
        match explain::explain(self.policy.as_ref(), &obs, out, settings) {
            Ok(explanation) => {
                self.stats_mut().explained(t0.elapsed().as_secs_f64() * 1e3);
                Some(Output::Explanation(Box::new(Explained {
                    obs,
                    explanation,
                    threshold: settings.threshold,
                    camera_names: self.camera_names.clone(),
                })))
            }
            Err(e) => {
                self.stats_mut().explain_errors += 1;
                tracing::warn!(error = %e, "explanation failed");
                None
            }
        }
    }

    /// One control tick at `now`: its outputs go to `outputs`. Returns the state when it
    /// changed (the node then sends its status at once).
    pub fn tick(&self, pipe: &Mutex<Pipeline>, now: i64, outputs: &mut Vec<Output>) -> Option<ControlState> {
        let mut events = Events::new();
        let out = lock(pipe).tick(now, &mut events);
        self.count(&mut events);
        if out.state_changed {
            match out.state.level() {
                0 => tracing::info!("{}", out.state),
                _ => tracing::warn!("{}", out.state),
            }
        }
        {
            let mut slot = lock(&self.task);
            if let Some(outcome) = slot.as_mut().and_then(|a| a.task.update(now, &out)) {
                let active = slot.take().expect("just updated");
                self.end_task(pipe, active, outcome);
            }
        }
        self.commands(now, &out, outputs);
        if let Some(positions) = out.target {
            outputs.push(Output::Predicted { stamp: now, positions, joint_names: self.joint_names.clone() });
        }
        out.state_changed.then_some(out.state)
    }

    /// The command outputs of a tick: the arm's when it goes out (with the plan ahead),
    /// the gripper's every tick; none in a dry run, but for the one stop after it began.
    fn commands(&self, now: i64, out: &TickOutput, outputs: &mut Vec<Output>) {
        let arm = |points: Vec<Vec<f64>>| Output::Command {
            stamp: now,
            points,
            kind: self.command_type,
            joint_names: self.split.arm_names.clone(),
            period_ns: self.period_ns,
        };
        let gripper = |cmd: &[f64]| (!self.split.gripper.is_empty()).then(|| Output::Gripper { positions: Split::pick(&self.split.gripper, cmd) });
        if self.dry_run() {
            if self.stop_pending.swap(false, Ordering::AcqRel) {
                if let Some(last) = lock(&self.last_sent).clone() {
                    outputs.push(arm(vec![Split::pick(&self.split.arm, &last)]));
                    outputs.extend(gripper(&last));
                }
            }
            return;
        }
        let Some(cmd) = &out.command else { return };
        if out.publish {
            let points = std::iter::once(cmd).chain(&out.plan).map(|p| Split::pick(&self.split.arm, p)).collect();
            outputs.push(arm(points));
            *lock(&self.last_sent) = Some(cmd.clone());
            if let Some(set_stamp) = out.source {
                outputs.push(Output::CommandSource { set_stamp });
            }
        }
        outputs.extend(gripper(cmd));
    }

    /// The node's status at `now`, one per concern.
    pub fn diagnostics(&self, pipe: &Mutex<Pipeline>, now: i64) -> Output {
        let (state, enabled) = {
            let p = lock(pipe);
            (p.state().clone(), p.enabled())
        };
        let message = state.to_string();
        let status = |concern: &str, level: u8, message: String, values| self.status(now, concern, level, message, values);
        // The task before the stats: start_task counts (locks the stats) with the task
        // locked.
        let (level, operator, values) = self.operator(enabled);
        let operator = status("operator", level, operator, values);
        let mut st = self.stats_mut();
        let mut statuses = vec![status("pipeline", state.level(), message.clone(), st.key_values(&message)), operator];
        for c in health::checks(&mut st.recent, &self.feeds, &self.thresholds, now) {
            statuses.push(status(c.concern, c.level, c.message, c.values));
        }
        Output::Diagnostics(statuses)
    }

    /// A status of this node about `concern` (`<node's full name>: <concern>`).
    pub fn status(&self, now: i64, concern: &str, level: u8, message: String, values: Vec<(String, String)>) -> Status {
        Status { stamp: now, name: format!("{}: {concern}", self.node_name), level, message, values }
    }

    /// The operator's status: level, message, and the values enabled, dry run, the task
    /// in progress and how past tasks ended.
    fn operator(&self, enabled: bool) -> (u8, String, Vec<(String, String)>) {
        let dry_run = self.dry_run();
        let message = match (enabled, dry_run) {
            (true, false) => "enabled",
            (false, false) => "disabled: holding",
            (true, true) => "dry run: commands are computed, not sent",
            (false, true) => "disabled, dry run",
        };
        let mut values = vec![("enabled".to_owned(), enabled.to_string()), ("dry_run".to_owned(), dry_run.to_string())];
        let task = lock(&self.task).as_ref().map(|a| (a.task.seq(), a.task.progress().clone()));
        values.push((
            "task".to_owned(),
            task.map_or("none".to_owned(), |(seq, p)| format!("#{seq}, {:.1} s, {}", p.elapsed_ns as f64 / 1e9, p.state)),
        ));
        for (kind, n) in lock(&self.outcomes).iter() {
            values.push((format!("tasks/{kind}"), n.to_string()));
        }
        (u8::from(!enabled || dry_run), message.to_owned(), values)
    }

    /// Counts what still waits in the synchronizer as dropped with `reason`.
    pub fn drain(&self, pipe: &Mutex<Pipeline>, reason: &'static str) {
        let mut events = Events::new();
        lock(pipe).drain(reason, &mut events);
        self.count(&mut events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::{Method, Smoothing, TokenMethod};
    use crate::core::contract::PolicyMeta;
    use crate::policy::fake::{Fault, FakePolicy};

    const MS: i64 = 1_000_000;

    fn meta() -> PolicyMeta {
        PolicyMeta::parse(
            r#"{"contract_version": 1, "name": "fake", "camera_names": ["main", "side"], "image_height": 12,
            "image_width": 16, "patch_grid": [3, 4], "joint_names": ["a", "b"], "action_dim": 2, "chunk_length": 5,
            "control_rate_hz": 100.0, "tokenizer": {"type": "char", "vocab": "abcdefghijklmnopqrstuvwxyz ",
            "max_length": 16, "pad_id": 0, "unk_id": 1, "lowercase": true},
            "normalization": {"state_mean": [0, 0], "state_std": [1, 1], "action_mean": [0, 0], "action_std": [1, 1]}}"#,
        )
        .unwrap()
    }

    fn config() -> Config {
        Config {
            camera_names: vec!["main".into(), "side".into()],
            image_width: 32,
            image_height: 24,
            joint_names: vec!["a".into(), "b".into()],
            control_rate_hz: 100.0,
            joint_lower_limits: vec![-1.0, -1.0],
            joint_upper_limits: vec![1.0, 1.0],
            max_step_per_tick: vec![0.1, 0.1],
            ..Config::default()
        }
        .with_smoothing(Smoothing::None)
    }

    fn image(cam: usize, t: i64) -> Arc<CameraImage> {
        let data: Vec<u8> = (0..32 * 24 * 3).map(|i| ((i * (cam + 3)) % 251) as u8).collect();
        Arc::new(CameraImage { stamp: t, frame_id: format!("cam{cam}"), width: 32, height: 24, encoding: "rgb8".into(), step: 96, data: data.into() })
    }

    struct Rig {
        driver: Driver,
        pipe: Mutex<Pipeline>,
    }

    impl Rig {
        fn new(cfg: Config, fault: Fault) -> Self {
            let policy = Arc::new(FakePolicy::new(meta()).unwrap().with_fault(fault));
            Self::with_policy(cfg, policy)
        }

        fn with_policy(cfg: Config, policy: Arc<dyn PolicyRunner>) -> Self {
            let driver = Driver::new(&cfg, policy, "/test");
            let limits = JointLimits::from_config(&cfg);
            Rig { pipe: driver.pipeline(&cfg, limits), driver }
        }

        /// Inputs at `t`, every completed set inferred and applied, then one tick.
        fn step(&self, t: i64, outputs: &mut Vec<Output>) -> Vec<(Observation, PolicyOutput)> {
            self.step_with(t, [0.0, 0.0], 2, outputs)
        }

        /// As `step`, with the measured joint state `q` and images from the first
        /// `cameras` cameras only.
        fn step_with(&self, t: i64, q: [f64; 2], cameras: usize, outputs: &mut Vec<Output>) -> Vec<(Observation, PolicyOutput)> {
            let mut inferred = Vec::new();
            self.driver.joint_state(&self.pipe, t, t, &["a".into(), "b".into()], &q);
            for cam in 0..cameras {
                for mut obs in self.driver.image(&self.pipe, cam, image(cam, t), t) {
                    if !self.driver.prepare(&self.pipe, &mut obs) {
                        continue;
                    }
                    let result = self.driver.infer(&obs);
                    self.driver.apply(&self.pipe, &obs, &result, t, outputs);
                    if let Ok(out) = result {
                        inferred.push((obs, out));
                    }
                }
            }
            self.driver.tick(&self.pipe, t, outputs);
            inferred
        }

        /// Steps every 10 ms from `from` (ms) until `until` says stop or 5 s pass;
        /// returns the time of the last step (ms).
        fn run_until(&self, from: i64, mut until: impl FnMut(&Self, i64) -> bool) -> i64 {
            let mut outputs = Vec::new();
            let mut t = from;
            while t < from + 5000 && !until(self, t) {
                self.step(t * MS, &mut outputs);
                t += 10;
            }
            t
        }
    }

    /// The first point of every arm command among `outputs`.
    fn commands(outputs: &[Output]) -> Vec<Vec<f64>> {
        outputs.iter().filter_map(|o| if let Output::Command { points, .. } = o { Some(points[0].clone()) } else { None }).collect()
    }

    #[test]
    fn a_camera_set_becomes_commands_an_explanation_and_a_status() {
        let rig = Rig::new(config(), Fault::None);
        rig.driver.instruction(&rig.pipe, "go left");
        let mut outputs = Vec::new();
        let mut inferred = Vec::new();
        for k in 0..10 {
            inferred.extend(rig.step(k * 10 * MS, &mut outputs));
        }
        let commands: Vec<&Vec<f64>> = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Command { points, kind, joint_names, .. } => {
                    assert_eq!((*kind, points.len(), &**joint_names), (CommandType::Float64MultiArray, 1, &["a".to_owned(), "b".to_owned()][..]));
                    Some(&points[0])
                }
                _ => None,
            })
            .collect();
        assert!(!commands.is_empty() && !inferred.is_empty());
        assert!(outputs.iter().any(|o| matches!(o, Output::Predicted { .. })));
        assert!(outputs.iter().any(|o| matches!(o, Output::CommandSource { .. })));

        let (obs, out) = inferred.pop().unwrap();
        let settings = Settings { threshold: 0.3, alpha: 0.4, method: Method::Occlusion, token_method: TokenMethod::Auto, occlusion_batch: 4 };
        let Some(Output::Explanation(e)) = rig.driver.explain(obs.clone(), &out, &settings) else {
            panic!("an explanation");
        };
        let Explained { explanation, camera_names, .. } = *e;
        assert_eq!(&*camera_names, ["main", "side"]);
        assert_eq!(explanation.grids.len(), 2);
        assert!(explanation.grids.iter().all(|g| g.len() == 12 && g.iter().any(|v| *v > 0.0)), "occlusion moves the fake chunk");
        assert_eq!(explanation.overlays[0].dimensions(), (32, 24));
        // auto: the fake policy's own token weights (uniform over the real tokens).
        let n = obs.tokens.len();
        assert_eq!(explanation.token_method, TokenMethod::PolicyAttention);
        assert_eq!(explanation.token_weights, vec![1.0 / n as f32; n]);
        // occlusion: what each token adds to the fake chunk, `(id + position) % 7`.
        let settings = Settings { token_method: TokenMethod::Occlusion, ..settings };
        let Some(Output::Explanation(e)) = rig.driver.explain(obs.clone(), &out, &settings) else {
            panic!("an explanation");
        };
        let expected: Vec<f64> = obs.tokens.ids[..n].iter().enumerate().map(|(i, id)| ((id + i as i64) % 7) as f64).collect();
        let total: f64 = expected.iter().sum();
        assert_eq!(e.explanation.token_method, TokenMethod::Occlusion);
        for (w, x) in e.explanation.token_weights.iter().zip(&expected) {
            assert!((f64::from(*w) - x / total).abs() < 1e-3, "{:?} against {expected:?}", e.explanation.token_weights);
        }

        let Output::Diagnostics(statuses) = rig.driver.diagnostics(&rig.pipe, 90 * MS) else { panic!() };
        let names: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["/test: pipeline", "/test: operator", "/test: camera sync", "/test: input rates", "/test: inference"]);
        let status = &statuses[0];
        assert_eq!((status.name.as_str(), status.level), ("/test: pipeline", 0));
        assert_eq!((statuses[1].level, statuses[1].message.as_str()), (0, "enabled"));
        assert_eq!(statuses[4].values[0], ("inferences in window".to_owned(), inferred.len().saturating_add(1).to_string()));
        let value = |k: &str| status.values.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        assert_eq!(value("inferences"), Some(inferred.len().saturating_add(1).to_string()));
        assert_eq!(value("explanations").as_deref(), Some("2"), "one by each token method");
        assert_eq!(value("received/camera/main/image_raw").as_deref(), Some("10"));
    }

    #[test]
    fn dry_run_sends_no_commands_and_a_failing_policy_holds() {
        let rig = Rig::new(Config { dry_run: true, ..config() }, Fault::None);
        rig.driver.instruction(&rig.pipe, "go");
        let mut outputs = Vec::new();
        for k in 0..10 {
            rig.step(k * 10 * MS, &mut outputs);
        }
        assert!(outputs.iter().any(|o| matches!(o, Output::Predicted { .. })));
        assert!(!outputs.iter().any(|o| matches!(o, Output::Command { .. } | Output::CommandSource { .. })));

        for fault in [Fault::Error, Fault::NonFinite] {
            let rig = Rig::new(config(), fault);
            rig.driver.instruction(&rig.pipe, "go");
            let mut outputs = Vec::new();
            for k in 0..10 {
                assert!(rig.step(k * 10 * MS, &mut outputs).is_empty());
            }
            assert!(!outputs.iter().any(|o| matches!(o, Output::Command { .. })));
            assert!(matches!(lock(&rig.pipe).state(), ControlState::PolicyFault(_)), "{fault:?}");
            assert!(stats::lock(rig.driver.stats()).inference_errors > 0);
        }
    }

    #[test]
    fn gripper_joints_go_out_on_their_own_every_tick() {
        let rig = Rig::new(Config { gripper_joints: vec!["a".into()], ..config() }, Fault::None);
        rig.driver.instruction(&rig.pipe, "go");
        let mut outputs = Vec::new();
        for k in 0..10 {
            rig.step(k * 10 * MS, &mut outputs);
        }
        let arm: Vec<_> = outputs.iter().filter_map(|o| if let Output::Command { points, joint_names, .. } = o { Some((points, joint_names)) } else { None }).collect();
        let gripper: Vec<_> = outputs.iter().filter_map(|o| if let Output::Gripper { positions } = o { Some(positions) } else { None }).collect();
        assert!(!arm.is_empty() && arm.len() == gripper.len());
        assert!(arm.iter().all(|(p, names)| p[0].len() == 1 && ***names == ["b"]));
        assert!(gripper.iter().all(|g| g.len() == 1));
    }

    #[test]
    fn trajectories_carry_the_plan_at_their_rate() {
        let cfg = Config { command_type: CommandType::JointTrajectory, trajectory_horizon: 4, trajectory_rate_hz: 50.0, ..config() };
        let rig = Rig::new(cfg, Fault::None);
        rig.driver.instruction(&rig.pipe, "go");
        let mut per_tick = Vec::new();
        for k in 0..20 {
            let mut outputs = Vec::new();
            rig.step(k * 10 * MS, &mut outputs);
            per_tick.push(outputs.iter().find_map(|o| if let Output::Command { points, period_ns, .. } = o { Some((points.len(), *period_ns)) } else { None }));
        }
        let first = per_tick.iter().position(Option::is_some).unwrap();
        for (i, sent) in per_tick[first..].iter().enumerate() {
            match sent {
                // The fake policy's chunks hold 5 actions: the plan can be shorter than 4.
                Some((n, period)) => assert!(i % 2 == 0 && (1..=4).contains(n) && *period == 10 * MS, "tick {i}: {sent:?}"),
                None => assert!(i % 2 == 1, "tick {i}"),
            }
        }
    }

    #[test]
    fn dry_run_at_run_time_stops_once_and_resumes_from_the_measured_state() {
        let rig = Rig::new(config(), Fault::None);
        rig.driver.instruction(&rig.pipe, "go");
        let mut outputs = Vec::new();
        for k in 0..10 {
            rig.step(k * 10 * MS, &mut outputs);
        }
        let last = commands(&outputs).pop().unwrap();
        rig.driver.set_dry_run(&rig.pipe, true);
        let mut during = Vec::new();
        for k in 10..12 {
            // The arm is moved by hand meanwhile (farther than the dry run's commands
            // could follow in two ticks).
            rig.step_with(k * 10 * MS, [0.6, 0.6], 2, &mut during);
        }
        assert_eq!(commands(&during), vec![last], "one stop at the last command sent, then nothing");
        assert!(during.iter().any(|o| matches!(o, Output::Predicted { .. })));
        rig.driver.set_dry_run(&rig.pipe, false);
        let mut after = Vec::new();
        rig.step_with(120 * MS, [0.6, 0.6], 2, &mut after);
        let first = commands(&after).pop().expect("commands again");
        assert!(first.iter().all(|q| (q - 0.6).abs() <= 0.1 + 1e-12), "one step from the measured state: {first:?}");
    }

    #[test]
    fn disabled_holds_and_is_reported() {
        let rig = Rig::new(config(), Fault::None);
        rig.driver.instruction(&rig.pipe, "go");
        let mut outputs = Vec::new();
        for k in 0..10 {
            rig.step(k * 10 * MS, &mut outputs);
        }
        assert_eq!(rig.driver.set_enabled(&rig.pipe, false, 100 * MS), "disabled: holding position, nothing new executed");
        assert_eq!(rig.driver.set_enabled(&rig.pipe, false, 100 * MS), "already disabled");
        let mut held = Vec::new();
        for k in 10..20 {
            rig.step(k * 10 * MS, &mut held);
        }
        let held = commands(&held);
        assert!(held.len() == 10 && held.iter().all(|c| *c == held[0]));
        let Output::Diagnostics(st) = rig.driver.diagnostics(&rig.pipe, 200 * MS) else { panic!() };
        assert_eq!((st[0].message.as_str(), st[1].level, st[1].message.as_str()), ("holding: disabled", 1, "disabled: holding"));
        assert!(st[1].values.contains(&("enabled".into(), "false".into())));
        assert!(rig.driver.start_task(&rig.pipe, "go", 0, 200 * MS).unwrap_err().contains("disabled"));
        rig.driver.set_enabled(&rig.pipe, true, 200 * MS);
        rig.run_until(200, |r, _| lock(&r.pipe).state() == &ControlState::Running);
    }

    /// A task's end, once it came.
    fn ended(end: &mut oneshot::Receiver<TaskEnd>) -> Option<TaskEnd> {
        end.try_recv().expect("the task's end is sent")
    }

    #[test]
    fn a_task_settles_then_the_arm_holds() {
        let rig = Rig::new(Config { goal_settle_speed: 0.05, goal_settle_time_s: 0.1, ..config() }, Fault::None);
        let (id, mut end) = rig.driver.start_task(&rig.pipe, "go left", 0, 0).unwrap();
        let mut result = None;
        rig.run_until(10, |_, _| {
            result = ended(&mut end);
            result.is_some()
        });
        let result = result.expect("settled");
        assert_eq!(result.outcome, Outcome::Settled);
        assert!(result.elapsed_ns >= 100 * MS && result.command.len() == 2, "{result:?}");
        assert_eq!(rig.driver.task_progress(id), None);
        assert_eq!(lock(&rig.pipe).instruction(), None, "the instruction is withdrawn: the arm holds");
        let Output::Diagnostics(st) = rig.driver.diagnostics(&rig.pipe, 0) else { panic!() };
        assert!(st[1].values.contains(&("tasks/settled".into(), "1".into())), "{:?}", st[1]);
    }

    #[test]
    fn a_task_ends_at_its_time_limit_on_cancel_and_on_preemption() {
        let rig = Rig::new(Config { goal_settle_time_s: 100.0, ..config() }, Fault::None);
        let (_, mut end) = rig.driver.start_task(&rig.pipe, "go", 150 * MS, 0).unwrap();
        let t = rig.run_until(10, |_, _| end.try_recv().unwrap().is_some());
        assert!((150..=170).contains(&t), "ended at {t} ms");

        let (id, mut end) = rig.driver.start_task(&rig.pipe, "go", 0, t * MS).unwrap();
        rig.run_until(t, |r, _| r.driver.task_progress(id).is_some_and(|p| p.state == "running"));
        assert!(!rig.driver.cancel_task(&rig.pipe, id + 1), "not that task");
        assert!(rig.driver.cancel_task(&rig.pipe, id));
        assert_eq!(ended(&mut end).unwrap().outcome, Outcome::Cancelled);
        assert_eq!(lock(&rig.pipe).instruction(), None);

        let (_, mut first) = rig.driver.start_task(&rig.pipe, "one", 0, 0).unwrap();
        let (_, mut second) = rig.driver.start_task(&rig.pipe, "two", 0, 0).unwrap();
        assert_eq!(ended(&mut first).unwrap().outcome, Outcome::Preempted("a new goal".into()));
        rig.driver.instruction(&rig.pipe, "three");
        assert_eq!(ended(&mut second).unwrap().outcome, Outcome::Preempted("the instruction \"three\" on the topic".into()));
        assert_eq!(lock(&rig.pipe).instruction(), Some("three"), "the topic's instruction takes over");
        assert!(rig.driver.start_task(&rig.pipe, "x".repeat(40).as_str(), 0, 0).unwrap_err().contains("token limit"));
    }

    #[test]
    fn a_fault_mid_task_ends_it() {
        // A camera goes silent.
        let rig = Rig::new(config(), Fault::None);
        let (_, mut end) = rig.driver.start_task(&rig.pipe, "go", 0, 0).unwrap();
        let mut outputs = Vec::new();
        for k in 1..5 {
            rig.step(k * 10 * MS, &mut outputs);
        }
        let (mut t, mut result) = (50, None);
        while result.is_none() && t < 2000 {
            rig.step_with(t * MS, [0.0, 0.0], 1, &mut outputs);
            result = ended(&mut end);
            t += 10;
        }
        let Outcome::Fault(why) = result.expect("a fault").outcome else { panic!() };
        assert_eq!(why, "holding: camera/side/image_raw went silent");
        assert!((550..=570).contains(&t), "after camera_timeout_s: {t} ms");
        let Output::Diagnostics(st) = rig.driver.diagnostics(&rig.pipe, t * MS) else { panic!() };
        assert!(st[1].values.contains(&("tasks/fault".into(), "1".into())), "{:?}", st[1]);

        // The policy fails.
        let rig = Rig::new(config(), Fault::Error);
        let (_, mut end) = rig.driver.start_task(&rig.pipe, "go", 0, 0).unwrap();
        let mut result = None;
        rig.run_until(10, |_, _| {
            result = ended(&mut end);
            result.is_some()
        });
        let Outcome::Fault(why) = result.expect("a fault").outcome else { panic!() };
        assert!(why.contains("policy failed"), "{why}");
    }

    #[test]
    fn real_time_chunking_waits_for_the_horizon_and_keeps_the_running_chunk() {
        // The fake policy as a flow-matching one: its chunk ramps over 5 actions.
        let json = r#"{"contract_version": 2, "name": "fake flow", "kind": "flow",
            "cameras": [{"name": "main", "width": 16, "height": 12}, {"name": "side", "width": 16, "height": 12}],
            "state_names": ["a", "b"], "action_names": ["a", "b"], "action_mode": "absolute", "chunk_length": 5,
            "control_rate_hz": 100.0, "tokenizer": null, "patch_grid": [3, 4],
            "flow": {"num_steps": 10, "time": "noise_at_one", "guidance": "autograd"},
            "normalization": {"state_mean": [0, 0], "state_std": [1, 1], "action_mean": [0, 0], "action_std": [1, 1]}}"#;
        let meta = PolicyMeta::parse(json).unwrap();
        let rtc = Smoothing::Rtc { execution_horizon: 2, max_guidance_weight: 5.0, fixed_delay: 1 };
        let cfg = config().with_smoothing(rtc);
        assert!(meta.differences(&cfg).is_empty(), "{:?}", meta.differences(&cfg));
        let rig = Rig::with_policy(cfg, Arc::new(FakePolicy::new(meta).unwrap()));
        let mut outputs = Vec::new();
        let mut inferred = Vec::new();
        for k in 0..30 {
            inferred.extend(rig.step(k * 10 * MS, &mut outputs));
        }
        let st = stats::lock(rig.driver.stats());
        assert!(st.rtc_waits > 0 && st.inferences as usize == inferred.len() && st.observations > st.inferences, "{st:?}");
        assert_eq!(st.inference_errors, 0);
        drop(st);
        // Each chunk after the first starts with the running chunk's action for its
        // first tick, exactly (the frozen prefix of one tick).
        for w in inferred.windows(2) {
            let ((o1, c1), (o2, c2)) = (&w[0], &w[1]);
            let offset = ((o2.arrival - o1.arrival) / (10 * MS)) as usize;
            assert!(o2.inpaint.as_ref().is_some_and(|i| i.delay == 1 && !i.prefix.is_empty()));
            assert_eq!(c2.actions[0], c1.actions[offset], "chunk seam");
        }
        assert!(outputs.iter().any(|o| matches!(o, Output::Command { .. })));
        assert!(outputs.iter().any(|o| matches!(o, Output::Chunk { .. })));
    }
}
