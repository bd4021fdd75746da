//! The live node: the [`Driver`]'s steps scheduled on threads and timers, its outputs
//! published. Three activities are kept apart so that none can delay another:
//!
//! - receiving: the thread that spins r2r decodes camera images (outside any lock) and
//!   feeds them and joint states to the pipeline; completed observations go to a
//!   one-place slot where the newest wins;
//! - inference: a dedicated thread takes the newest observation, runs the policy, and
//!   hands the chunk to the pipeline; at most one inference is in flight;
//! - control: a timer at the control rate asks the pipeline for this tick's command and
//!   publishes it.
//!
//! Explanations run on a thread of their own at normal priority; the instruction, /clock,
//! parameters, timers, the `~/enable` service and the `~/execute_instruction` action run
//! on a small tokio runtime.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{FutureExt, StreamExt};
use r2r::{
    rosgraph_msgs::msg::Clock as ClockMsg,
    sensor_msgs::msg::{Image, JointState},
    std_msgs::msg::String as RosString,
    std_srvs::srv::SetBool,
    vla_controller_msgs::action::ExecuteInstruction,
    ActionServerCancelRequest, ActionServerGoal, QosProfile,
};

use super::msgs::{self, ChunkTiming};
use super::native::camera_image_native;
use super::params::{self, lock_live, LiveConfig};
use super::publishers::Publishers;
use super::threads::{set_reception_thread_priority, set_thread_priority, spawn_with_priority, wall_ns, LatestSlot};
use crate::core::config::{Config, ParamValue, Params, RobotDescriptionSource};
use crate::core::control::limits::JointLimits;
use crate::core::pipeline::{Observation, Pipeline};
use crate::core::task::Outcome;
use crate::core::stats;
use crate::core::topics::{self, OutputTopic, NODE_NAME};
use crate::driver::{Driver, Output, TaskEnd};
use crate::explain::Settings;
use crate::policy::{PolicyOutput, PolicyRunner};
use crate::memory;

/// The ROS side of the node before it runs: the r2r node and the parameters it was
/// started with (parameters files and `-p` from `--ros-args`).
pub struct RosNode {
    node: r2r::Node,
    params: Params,
}

impl RosNode {
    /// Initializes ROS 2 from the process's arguments and creates the node.
    pub fn create() -> anyhow::Result<RosNode> {
        let ctx = r2r::Context::create().context("initializing ROS 2")?;
        let mut node = r2r::Node::create(ctx, NODE_NAME, "").context("creating the node")?;
        super::rosout::attach(&mut node);
        let params = params::read(&node);
        Ok(RosNode { node, params })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    fn use_sim_time(&self) -> bool {
        self.params.get("use_sim_time") == Some(&ParamValue::Bool(true))
    }
}

/// A complete observation on its way to the inference thread, with the wall-clock times
/// of its stages so far (for `~/timing/chunk`).
struct Queued {
    obs: Observation,
    /// The message that completed the set was taken from the middleware.
    received: i64,
    /// The set was handed to the inference thread.
    queued: i64,
}

/// The node's clock: system time, or under use_sim_time the last /clock message (0 until
/// the first arrives, as in rclcpp). Sim time is followed here rather than through
/// r2r's TimeSource, which r2r only compiles in when its generated-bindings cache is
/// fresh.
#[derive(Clone)]
enum Clock {
    System(Arc<Mutex<r2r::Clock>>),
    Sim(Arc<AtomicI64>),
}

impl Clock {
    /// Now, in nanoseconds.
    fn now(&self) -> i64 {
        match self {
            Clock::System(c) => c.lock().unwrap_or_else(|e| e.into_inner()).get_now().unwrap_or_default().as_nanos() as i64,
            Clock::Sim(t) => t.load(Ordering::Acquire),
        }
    }
}

/// SCHED_FIFO priorities, highest first: the control loop, receiving (with the
/// middleware's reception threads), inference; 0 for normal priority. The explanation
/// thread keeps normal priority, so that it can never delay a command.
#[derive(Debug, Clone, Copy)]
struct Priorities {
    control: u32,
    receive: u32,
    inference: u32,
}

impl Priorities {
    fn new(control: u32) -> Self {
        let below = |n: u32| if control == 0 { 0 } else { control.saturating_sub(n).max(1) };
        Priorities { control, receive: below(1), inference: below(2) }
    }
}

/// What the activities share.
#[derive(Clone)]
struct Shared {
    driver: Arc<Driver>,
    pipe: Arc<Mutex<Pipeline>>,
    clock: Clock,
    publishers: Publishers,
    /// Complete observations for the inference thread (newest wins).
    observations: Arc<LatestSlot<Queued>>,
    /// Inferences for the explanation thread (newest wins).
    explanations: Arc<LatestSlot<(Observation, PolicyOutput)>>,
    live: Arc<Mutex<LiveConfig>>,
    running: Arc<AtomicBool>,
}

impl Shared {
    fn publish(&self, out: Output) {
        for (topic, msg) in msgs::messages(out) {
            self.publishers.publish(topic, &msg);
        }
    }
}

/// Runs the node with `cfg` and a policy checked against it until `shutdown` completes.
pub fn run(ros: RosNode, cfg: Config, policy: Arc<dyn PolicyRunner>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let use_sim_time = ros.use_sim_time();
    let mut node = ros.node;
    params::declare(&node, &cfg);
    let priorities = Priorities::new(cfg.thread_priority);
    if priorities.control > 0 {
        tracing::info!(control = priorities.control, receive = priorities.receive, inference = priorities.inference, "SCHED_FIFO priorities");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || set_thread_priority(priorities.control, "control"))
        .enable_all()
        .build()?;
    let _enter = rt.enter();

    let limits = joint_limits(&mut node, &cfg)?;
    let node_name = node.fully_qualified_name()?;
    let driver = Driver::new(&cfg, policy, &node_name);
    let live = LiveConfig::new(cfg.clone(), driver.policy().meta().clone());
    let shared = Shared {
        pipe: Arc::new(driver.pipeline(&cfg, limits)),
        driver: Arc::new(driver),
        clock: clock(&mut node, &rt, use_sim_time)?,
        publishers: Publishers::new(&mut node, &cfg)?,
        observations: Arc::new(LatestSlot::new()),
        explanations: Arc::new(LatestSlot::new()),
        live: Arc::new(Mutex::new(live)),
        running: Arc::new(AtomicBool::new(true)),
    };
    serve_parameters(&mut node, &rt, &shared)?;
    serve_enable(&mut node, &rt, &shared)?;
    serve_tasks(&mut node, &rt, &shared, &cfg)?;
    let receivers = subscribe_inputs(&mut node, &rt, &shared, &cfg)?;
    let explainer = spawn_explainer(&shared)?;
    let inference = spawn_inference(&shared, priorities.inference, Duration::from_secs_f64(cfg.test_added_inference_delay_s))?;
    let state_changed = Arc::new(tokio::sync::Notify::new());
    spawn_control(&rt, &shared, &cfg, state_changed.clone());
    spawn_diagnostics(&rt, &shared, &cfg, state_changed);
    if priorities.receive > 0 {
        let n = set_reception_thread_priority(priorities.receive);
        tracing::debug!(threads = n, priority = priorities.receive, "middleware reception threads");
    }
    let spinner = spawn_spinner(node, receivers, shared.running.clone(), priorities.receive)?;
    // Every thread is up: say so (tests and launch tools wait for this line).
    tracing::info!(
        node = %node_name,
        cameras = ?cfg.camera_names,
        control_rate_hz = cfg.control_rate_hz,
        command = %OutputTopic::Commands.name(&cfg.camera_names),
        "vla_controller running"
    );

    rt.block_on(shutdown);
    tracing::info!("shutting down");
    // Stop the timers and subscriptions first, so nothing publishes while the rest stops.
    drop(_enter);
    rt.shutdown_timeout(Duration::from_millis(200));
    shared.running.store(false, Ordering::Relaxed);
    shared.observations.close();
    shared.explanations.close();
    for (name, thread) in [("ros-spin", spinner), ("inference", inference), ("explain", explainer)] {
        if thread.join().is_err() {
            tracing::error!(thread = name, "thread panicked");
        }
    }
    Ok(())
}

/// The node's clock; under use_sim_time, /clock is followed on the runtime.
fn clock(node: &mut r2r::Node, rt: &tokio::runtime::Runtime, use_sim_time: bool) -> anyhow::Result<Clock> {
    if !use_sim_time {
        return Ok(Clock::System(node.get_ros_clock()));
    }
    let t = Arc::new(AtomicI64::new(0));
    // Best effort, depth 1, as rclcpp's clock QoS: also matches reliable publishers.
    let mut sub = node.subscribe::<ClockMsg>(topics::CLOCK, QosProfile::sensor_data().keep_last(1))?;
    let tt = t.clone();
    rt.spawn(async move {
        while let Some(msg) = sub.next().await {
            tt.store(msgs::stamp_ns(&msg.clock), Ordering::Release);
        }
    });
    tracing::info!("use_sim_time: following /clock");
    Ok(Clock::Sim(t))
}

/// Parameter services (list/get/set/describe); run-time parameters can be changed while
/// running, the others are refused with the reason. Explanation settings are read from
/// the live configuration where used; `dry_run` switches the driver.
fn serve_parameters(node: &mut r2r::Node, rt: &tokio::runtime::Runtime, shared: &Shared) -> anyhow::Result<()> {
    let (server, mut events) = node.make_derived_parameter_handler(shared.live.clone())?;
    rt.spawn(server);
    let s = shared.clone();
    rt.spawn(async move {
        while let Some((name, value)) = events.next().await {
            tracing::info!(parameter = name, ?value, "parameter changed");
            if name == "dry_run" {
                let on = lock_live(&s.live).cfg.dry_run;
                s.driver.set_dry_run(&s.pipe, on);
            }
        }
    });
    Ok(())
}

/// The joint limits: the parameters file's, or the robot description's (from the
/// parameter, or from the topic robot_state_publisher serves, waited for here)
/// tightened by the parameters file.
fn joint_limits(node: &mut r2r::Node, cfg: &Config) -> anyhow::Result<JointLimits> {
    let urdf = match cfg.robot_description_source {
        RobotDescriptionSource::None => None,
        RobotDescriptionSource::Parameter => Some(cfg.robot_description.clone()),
        RobotDescriptionSource::Topic => Some(wait_for_robot_description(node, Duration::from_secs_f64(cfg.robot_description_timeout_s))?),
    };
    Ok(JointLimits::resolve(cfg, urdf.as_deref())?)
}

/// The first robot description on its topic, transient local as robot_state_publisher
/// publishes it, within `timeout`; before the node runs, so spun here.
fn wait_for_robot_description(node: &mut r2r::Node, timeout: Duration) -> anyhow::Result<String> {
    let qos = QosProfile::default().keep_last(1).transient_local();
    let mut sub = node.subscribe::<RosString>(topics::ROBOT_DESCRIPTION, qos)?;
    tracing::info!(topic = topics::ROBOT_DESCRIPTION, "waiting for the robot description");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        node.spin_once(Duration::from_millis(20));
        if let Some(msg) = try_next(&mut sub) {
            return Ok(msg.data);
        }
    }
    anyhow::bail!(
        "no robot description on `{}` within robot_description_timeout_s ({} s): is robot_state_publisher running, \
         publishing it transient local?",
        topics::ROBOT_DESCRIPTION,
        timeout.as_secs_f64()
    )
}

/// `~/enable` (std_srvs/SetBool): false holds, true resumes.
fn serve_enable(node: &mut r2r::Node, rt: &tokio::runtime::Runtime, shared: &Shared) -> anyhow::Result<()> {
    let mut requests = node.create_service::<SetBool::Service>(topics::ENABLE_SERVICE, QosProfile::services_default())?;
    let s = shared.clone();
    rt.spawn(async move {
        while let Some(req) = requests.next().await {
            let message = s.driver.set_enabled(&s.pipe, req.message.data, s.clock.now());
            if let Err(error) = req.respond(SetBool::Response { success: true, message }) {
                tracing::warn!(%error, "~/enable: the response could not be sent");
            }
        }
    });
    Ok(())
}

/// `~/execute_instruction`: each goal becomes the driver's task; invalid goals (an
/// instruction the topic would reject, a negative time limit, a disabled node) are
/// rejected with the reason in the log.
fn serve_tasks(node: &mut r2r::Node, rt: &tokio::runtime::Runtime, shared: &Shared, cfg: &Config) -> anyhow::Result<()> {
    let mut goals = node.create_action_server::<ExecuteInstruction::Action>(topics::EXECUTE_ACTION)?;
    let feedback_every = Duration::from_secs_f64(1.0 / cfg.goal_feedback_rate_hz);
    let s = shared.clone();
    let handle = rt.handle().clone();
    rt.spawn(async move {
        while let Some(request) = goals.next().await {
            let (text, limit) = (request.goal.instruction.clone(), msgs::duration_ns(&request.goal.time_limit));
            let started = if limit < 0 {
                Err(format!("negative time_limit ({} s)", limit as f64 / 1e9))
            } else {
                s.driver.start_task(&s.pipe, &text, limit, s.clock.now())
            };
            let (id, end) = match started {
                Ok(started) => started,
                Err(why) => {
                    tracing::warn!(instruction = text, "goal rejected: {why}");
                    if let Err(error) = request.reject() {
                        tracing::warn!(%error, "the goal's rejection could not be sent");
                    }
                    continue;
                }
            };
            match request.accept() {
                Ok((goal, cancels)) => {
                    handle.spawn(run_goal(s.clone(), id, goal, cancels, end, feedback_every));
                }
                Err(error) => {
                    tracing::warn!(%error, "the goal's acceptance could not be sent; ending its task");
                    s.driver.cancel_task(&s.pipe, id);
                }
            }
        }
    });
    Ok(())
}

/// One accepted goal: feedback at its rate, cancel requests, and the result when its
/// task ends. SETTLED is reported as succeeded, CANCELLED as canceled, the rest aborted.
async fn run_goal(
    s: Shared,
    id: u64,
    mut goal: ActionServerGoal<ExecuteInstruction::Action>,
    mut cancels: impl futures::Stream<Item = ActionServerCancelRequest> + Unpin,
    mut end: futures::channel::oneshot::Receiver<TaskEnd>,
    feedback_every: Duration,
) {
    let names = s.driver.joint_names().clone();
    let mut feedback = tokio::time::interval(feedback_every);
    loop {
        tokio::select! {
            ended = &mut end => {
                // Without an end the driver is gone: the node is shutting down.
                let Ok(ended) = ended else { return };
                let result = msgs::task_result(&ended, &names);
                let sent = match ended.outcome {
                    Outcome::Settled => goal.succeed(result),
                    Outcome::Cancelled => goal.cancel(result),
                    _ => goal.abort(result),
                };
                if let Err(error) = sent {
                    tracing::warn!(%error, task = id, "the goal's result could not be sent");
                }
                return;
            }
            Some(request) = cancels.next() => {
                // The task's end (cancelled) follows through `end`.
                if s.driver.cancel_task(&s.pipe, id) { request.accept() } else { request.reject() }
            }
            _ = feedback.tick() => {
                if let Some(p) = s.driver.task_progress(id).filter(|p| !p.state.is_empty()) {
                    if let Err(error) = goal.publish_feedback(msgs::task_feedback(&p, &names)) {
                        tracing::debug!(%error, "feedback not sent");
                    }
                }
            }
        }
    }
}

/// What the spin thread runs after each spin: takes the messages a subscription holds.
type Receiver = Box<dyn FnMut() + Send>;

/// Subscribes to the inputs. Cameras and joint states are handled in the thread that
/// spins r2r, right after the take (as rclcpp's executors run callbacks): no wake-up of
/// another thread lies between a message's arrival and its decoding, and r2r's
/// per-subscription channel is drained after every spin, so it never fills and drops.
/// The instruction (for a policy that takes one) is handled on the runtime.
fn subscribe_inputs(node: &mut r2r::Node, rt: &tokio::runtime::Runtime, shared: &Shared, cfg: &Config) -> anyhow::Result<Vec<Receiver>> {
    let mut receivers: Vec<Receiver> = Vec::new();
    // Cameras: best effort (sensor data), which also accepts reliable publishers.
    for (i, name) in cfg.camera_names.iter().enumerate() {
        let mut sub = SpinThreadOnly(node.subscribe_native::<Image>(&topics::camera(name), QosProfile::sensor_data())?);
        let s = shared.clone();
        receivers.push(Box::new(move || {
            while let Some(msg) = sub.try_next() {
                let (now, received) = (s.clock.now(), wall_ns());
                let image = Arc::new(camera_image_native(msg));
                for obs in s.driver.image(&s.pipe, i, image, now) {
                    if s.observations.put(Queued { obs, received, queued: wall_ns() }).is_some() {
                        stats::lock(s.driver.stats()).observations_superseded += 1;
                    }
                }
            }
        }));
    }
    let mut sub = node.subscribe::<JointState>(topics::JOINT_STATES, QosProfile::sensor_data().keep_last(20))?;
    let s = shared.clone();
    receivers.push(Box::new(move || {
        while let Some(msg) = try_next(&mut sub) {
            let now = s.clock.now();
            s.driver.joint_state(&s.pipe, msgs::stamp_ns(&msg.header.stamp), now, &msg.name, &msg.position);
        }
    }));

    if shared.driver.policy().tokenizer().is_none() {
        tracing::info!("the policy takes no instruction: not subscribing to {}", topics::INSTRUCTION);
        return Ok(receivers);
    }
    // Two subscriptions: a transient-local one, so that a node started after the
    // instruction was sent (by a transient-local publisher) still receives it, and a
    // volatile one, because DDS does not match a volatile publisher (the default of
    // rclpy and rclcpp) with a transient-local subscription. A message from a
    // transient-local publisher arrives through both and is taken once.
    let latched = node.subscribe::<RosString>(topics::INSTRUCTION, QosProfile::default().keep_last(1).transient_local())?;
    let volatile = node.subscribe::<RosString>(topics::INSTRUCTION, QosProfile::default().keep_last(10))?;
    let mut both = futures::stream::select(latched.map(|m| (m, true)), volatile.map(|m| (m, false)));
    let s = shared.clone();
    rt.spawn(async move {
        let mut merge = InstructionMerge::default();
        while let Some((msg, via_latched)) = both.next().await {
            if !merge.is_duplicate(&msg.data, via_latched, Instant::now()) {
                s.driver.instruction(&s.pipe, &msg.data);
            }
        }
    });
    Ok(receivers)
}

/// Explanations, on their own thread at their own rate, newest inference first.
fn spawn_explainer(shared: &Shared) -> std::io::Result<JoinHandle<()>> {
    let s = shared.clone();
    // Normal priority, always: an explanation must never delay a command.
    spawn_with_priority("explain", 0, move || {
        while let Some((obs, out)) = s.explanations.take() {
            let (settings, rate) = {
                let c = &lock_live(&s.live).cfg;
                (Settings::from_config(c), c.explain_rate_hz)
            };
            let t0 = Instant::now();
            if let Some(output) = s.driver.explain(obs, &out, &settings) {
                if !s.running.load(Ordering::Relaxed) {
                    break;
                }
                s.publish(output);
            }
            // At most `rate` a second; meanwhile newer inferences replace older ones.
            if let Some(rest) = Duration::from_secs_f64(1.0 / rate).checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
        }
    })
}

/// Inference, off the async reactor: the newest observation, one at a time (with
/// real-time chunking, once the running chunk is down to its execution horizon). Each
/// chunk's stages go out on `~/timing/chunk`, so that a benchmark can measure
/// input-to-chunk latency from outside (benches/e2e.py). `added_delay` (tests and
/// benchmarks only) holds each chunk back before the control loop gets it.
fn spawn_inference(shared: &Shared, priority: u32, added_delay: Duration) -> std::io::Result<JoinHandle<()>> {
    let s = shared.clone();
    spawn_with_priority("inference", priority, move || {
        while let Some(Queued { mut obs, received, queued }) = s.observations.take() {
            if !s.driver.prepare(&s.pipe, &mut obs) {
                continue;
            }
            let started = wall_ns();
            let result = s.driver.infer(&obs);
            if !added_delay.is_zero() {
                std::thread::sleep(added_delay);
            }
            let mut outputs = Vec::with_capacity(1);
            s.driver.apply(&s.pipe, &obs, &result, s.clock.now(), &mut outputs);
            for out in outputs {
                s.publish(out);
            }
            if let Ok(out) = result {
                let finished = wall_ns();
                tracing::debug!(
                    stamp_to_received_ms = (received - obs.stamp) as f64 / 1e6,
                    decode_and_sync_ms = (queued - received) as f64 / 1e6,
                    handoff_ms = (started - queued) as f64 / 1e6,
                    forward_ms = (finished - started) as f64 / 1e6,
                    "inference"
                );
                let timing = ChunkTiming { source: obs.stamp, received, queued, started, finished };
                s.publishers.publish(OutputTopic::TimingChunk, &msgs::inference_timing(timing));
                s.explanations.put((obs, out));
            }
        }
    })
}

/// The control loop: one tick every control period. A change of state wakes the
/// diagnostics at once, not only at the next periodic status.
fn spawn_control(rt: &tokio::runtime::Runtime, shared: &Shared, cfg: &Config, state_changed: Arc<tokio::sync::Notify>) {
    let s = shared.clone();
    let period = Duration::from_nanos(cfg.control_period_ns() as u64);
    rt.spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut outputs = Vec::new();
        loop {
            interval.tick().await;
            if s.driver.tick(&s.pipe, s.clock.now(), &mut outputs).is_some() {
                state_changed.notify_one();
            }
            for out in outputs.drain(..) {
                s.publish(out);
            }
        }
    });
}

/// /diagnostics at `diagnostics_rate_hz`, and at once when the state changes.
fn spawn_diagnostics(rt: &tokio::runtime::Runtime, shared: &Shared, cfg: &Config, state_changed: Arc<tokio::sync::Notify>) {
    let s = shared.clone();
    let every = Duration::from_secs_f64(1.0 / cfg.diagnostics_rate_hz);
    rt.spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = state_changed.notified() => {}
            }
            let now = s.clock.now();
            let mut out = s.driver.diagnostics(&s.pipe, now);
            if let (Output::Diagnostics(statuses), Some(usage)) = (&mut out, memory::usage()) {
                statuses.push(s.driver.status(now, "memory", 0, usage.message(), usage.key_values()));
            }
            s.publish(out);
        }
    });
}

/// Spins r2r's executor in its own thread, handling cameras and joint states after each
/// spin; a short timeout keeps the shutdown prompt (messages wake the wait at once).
fn spawn_spinner(node: r2r::Node, mut receivers: Vec<Receiver>, running: Arc<AtomicBool>, priority: u32) -> std::io::Result<JoinHandle<()>> {
    spawn_with_priority("ros-spin", priority, move || {
        let mut node = node;
        while running.load(Ordering::Relaxed) {
            node.spin_once(Duration::from_millis(5));
            for receive in &mut receivers {
                receive();
            }
        }
    })
}

/// A stream of r2r's native messages, which are not `Send`: it is moved to the thread
/// that spins the node before the first spin, and only that thread takes messages
/// (during the spin) and receives them from the stream.
struct SpinThreadOnly<S>(S);

// SAFETY: nothing is in the stream's channel before the first spin, and from then on
// one thread alone puts messages in and takes them out.
unsafe impl<S> Send for SpinThreadOnly<S> {}

impl<S: futures::Stream + Unpin> SpinThreadOnly<S> {
    fn try_next(&mut self) -> Option<S::Item> {
        try_next(&mut self.0)
    }
}

/// The next message a subscription's stream already holds, without waiting.
fn try_next<S: futures::Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    stream.next().now_or_never().flatten()
}

/// Recognizes the second copy of one instruction message, delivered through the other of
/// the two instruction subscriptions.
#[derive(Default)]
struct InstructionMerge {
    last: Option<(String, bool, Instant)>,
}

impl InstructionMerge {
    /// Both copies arrive within a few milliseconds; half a second is ample and still
    /// far below how often anyone re-sends an instruction.
    const WINDOW: Duration = Duration::from_millis(500);

    fn is_duplicate(&mut self, text: &str, via_latched: bool, now: Instant) -> bool {
        let duplicate = matches!(&self.last,
            Some((t, l, at)) if t == text && *l != via_latched && now.duration_since(*at) < Self::WINDOW);
        self.last = if duplicate { None } else { Some((text.to_owned(), via_latched, now)) };
        duplicate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_copies_from_the_two_subscriptions_count_once() {
        let mut m = InstructionMerge::default();
        let t = Instant::now();
        assert!(!m.is_duplicate("go", true, t));
        assert!(m.is_duplicate("go", false, t + Duration::from_millis(3)));
        // A third delivery is a new message (the same text sent again).
        assert!(!m.is_duplicate("go", false, t + Duration::from_millis(5)));
        // Same subscription twice: two messages.
        assert!(!m.is_duplicate("go", false, t + Duration::from_millis(6)));
        // Different text, or too late: not a copy.
        assert!(!m.is_duplicate("stop", true, t + Duration::from_millis(7)));
        assert!(!m.is_duplicate("stop", false, t + Duration::from_secs(2)));
    }
}
