//! The ROS 2 adapter: parameters, subscriptions, publishers and the three activities of
//! the node, kept apart so that none can delay another:
//!
//! - receiving: the thread that spins r2r decodes camera images (outside any lock) and
//!   feeds them and joint states to [`Core`]; completed observations go to a one-place
//!   slot where the newest wins;
//! - inference: a dedicated thread takes the newest observation, runs the policy, and
//!   hands the chunk to [`Core`]; at most one inference is in flight;
//! - control: a timer at the control rate asks [`Core`] for this tick's command and
//!   publishes it.
//!
//! r2r's executor is spun in its own thread so that messages are handled as they come;
//! the instruction, /clock, parameters and timers run on a small tokio runtime.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use futures::{FutureExt, StreamExt};
use r2r::{
    diagnostic_msgs::msg::DiagnosticArray,
    rosgraph_msgs::msg::Clock as ClockMsg,
    sensor_msgs::msg::{Image, JointState},
    std_msgs::msg::{Float64MultiArray, Header, String as RosString},
    trajectory_msgs::msg::JointTrajectory,
    vla_controller_msgs::msg::{ActivationGrid, InferenceTiming, TokenAttention},
    ParameterValue, QosProfile,
};

use crate::config::{CommandType, Config, ParamValue, Params, PARAMETERS};
use crate::core::{camera_topic, Core, ImageDecoder, Observation, INSTRUCTION_TOPIC, JOINT_STATES_TOPIC};
use crate::explain::{self, Explanation, Settings};
use crate::policy::{self, Policy, PolicyOutput};
use crate::stats::{SharedStats, Stats};

use crate::ros_msgs::{self, COMMAND_TOPIC, NODE_NAME};

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

/// A one-place mailbox: `put` replaces what is there (newest wins), `take` waits.
struct LatestSlot<T> {
    value: Mutex<(Option<T>, bool)>,
    ready: Condvar,
}

impl<T> LatestSlot<T> {
    fn new() -> Self {
        LatestSlot { value: Mutex::new((None, false)), ready: Condvar::new() }
    }

    /// Returns the value it replaced, if any.
    fn put(&self, v: T) -> Option<T> {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        let old = g.0.replace(v);
        self.ready.notify_one();
        old
    }

    /// The newest value, or `None` once closed.
    fn take(&self) -> Option<T> {
        let mut g = self.value.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if g.1 {
                return None;
            }
            if let Some(v) = g.0.take() {
                return Some(v);
            }
            g = self.ready.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn close(&self) {
        self.value.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.ready.notify_all();
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

/// Puts a thread of this process (0: the calling one) under SCHED_FIFO with `priority`.
fn set_fifo(tid: libc::pid_t, priority: u32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: priority as i32 };
    // SAFETY: a system call on a thread of this process with a valid parameter.
    match unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Gives the calling thread real-time (SCHED_FIFO) priority, unless `priority` is 0.
/// Without permission the node says so once and the thread stays as it is.
fn set_thread_priority(priority: u32, thread: &str) {
    if priority == 0 {
        return;
    }
    if let Err(error) = set_fifo(0, priority) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                priority,
                thread,
                %error,
                "thread_priority not applied, running at normal priority (grant rtprio in \
                 /etc/security/limits.conf or CAP_SYS_NICE, or set thread_priority to 0)"
            )
        });
    }
}

/// Gives the middleware's reception threads real-time priority, so that a message is
/// handed over as promptly as it is then handled. Fast DDS names them `dds.shm.<port>`
/// and `dds.udp.<port>`; other threads, and other middlewares' threads, are left alone.
/// Returns how many threads were set.
fn set_reception_thread_priority(priority: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let mut set = 0;
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let reception = name.strip_prefix("dds.shm.").or_else(|| name.strip_prefix("dds.udp."));
        // The port number follows; `dds.shm.wdog` (a watchdog) is not a reception thread.
        if !reception.is_some_and(|port| port.trim().bytes().all(|b| b.is_ascii_digit())) {
            continue;
        }
        let Ok(tid) = task.file_name().to_string_lossy().parse::<libc::pid_t>() else { continue };
        if set_fifo(tid, priority).is_ok() {
            set += 1;
        }
    }
    set
}

/// Nanoseconds since the epoch on the system clock, whatever clock the node follows.
fn wall_ns() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

fn to_param_value(v: &ParameterValue) -> Option<ParamValue> {
    Some(match v {
        ParameterValue::Bool(b) => ParamValue::Bool(*b),
        ParameterValue::Integer(i) => ParamValue::Integer(*i),
        ParameterValue::Double(d) => ParamValue::Double(*d),
        ParameterValue::String(s) => ParamValue::String(s.clone()),
        ParameterValue::BoolArray(v) => ParamValue::BoolArray(v.clone()),
        ParameterValue::IntegerArray(v) => ParamValue::IntegerArray(v.clone()),
        ParameterValue::DoubleArray(v) => ParamValue::DoubleArray(v.clone()),
        ParameterValue::StringArray(v) => ParamValue::StringArray(v.clone()),
        ParameterValue::NotSet | ParameterValue::ByteArray(_) => return None,
    })
}

fn from_param_value(v: ParamValue) -> ParameterValue {
    match v {
        ParamValue::Bool(b) => ParameterValue::Bool(b),
        ParamValue::Integer(i) => ParameterValue::Integer(i),
        ParamValue::Double(d) => ParameterValue::Double(d),
        ParamValue::String(s) => ParameterValue::String(s),
        ParamValue::BoolArray(v) => ParameterValue::BoolArray(v),
        ParamValue::IntegerArray(v) => ParameterValue::IntegerArray(v),
        ParamValue::DoubleArray(v) => ParameterValue::DoubleArray(v),
        ParamValue::StringArray(v) => ParameterValue::StringArray(v),
    }
}

/// The configuration as the parameter services see it: reads return what is in effect,
/// writes are validated like start-up values and accepted only for parameters that take
/// effect while running (the others are refused with the reason).
struct LiveConfig(Config);

impl r2r::RosParams for LiveConfig {
    fn register_parameters(
        &mut self,
        _prefix: &str,
        _param: Option<r2r::Parameter>,
        _params: &mut r2r::indexmap::IndexMap<String, r2r::Parameter>,
    ) -> r2r::Result<()> {
        Ok(()) // declared by `setup`, with descriptions
    }

    fn get_parameter(&mut self, name: &str) -> r2r::Result<ParameterValue> {
        self.0
            .to_params()
            .remove(name)
            .map(from_param_value)
            .ok_or_else(|| r2r::Error::InvalidParameterName { name: name.to_owned() })
    }

    fn set_parameter(&mut self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        self.check_parameter(name, value)?;
        let v = to_param_value(value).expect("checked");
        self.0 = self.0.with_runtime_change(name, &v).expect("checked");
        Ok(())
    }

    fn check_parameter(&self, name: &str, value: &ParameterValue) -> r2r::Result<()> {
        let conv = |msg: String| r2r::Error::ParameterValueConv { name: name.to_owned(), msg };
        let v = to_param_value(value).ok_or_else(|| conv("unsupported value type".into()))?;
        self.0.with_runtime_change(name, &v).map(|_| ()).map_err(|e| conv(e.to_string()))
    }
}

fn lock_live(c: &Mutex<LiveConfig>) -> std::sync::MutexGuard<'_, LiveConfig> {
    c.lock().unwrap_or_else(|e| e.into_inner())
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
            Clock::System(c) => lock(c).get_now().unwrap_or_default().as_nanos() as i64,
            Clock::Sim(t) => t.load(Ordering::Acquire),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything start-up decided, before anything runs.
struct Setup {
    node: r2r::Node,
    cfg: Config,
    policy: Policy,
    use_sim_time: bool,
}

fn setup() -> anyhow::Result<Setup> {
    let ctx = r2r::Context::create().context("initializing ROS 2")?;
    let mut node = r2r::Node::create(ctx, NODE_NAME, "").context("creating the node")?;
    crate::rosout::attach(&mut node);
    let params: Params = lock(&node.params)
        .iter()
        .filter_map(|(k, p)| to_param_value(&p.value).map(|v| (k.clone(), v)))
        .collect();
    let (cfg, unknown) = Config::from_params(&params)?;
    for name in unknown {
        tracing::warn!(parameter = name, "unknown parameter ignored (a typo?)");
    }
    // Declare every parameter with the value in effect, so `ros2 param get` shows it.
    {
        let mut p = lock(&node.params);
        for (name, value) in cfg.to_params() {
            let description = PARAMETERS.iter().find(|(n, _)| *n == name).map_or("", |(_, d)| d);
            let mut param = r2r::Parameter::new(from_param_value(value));
            param.description = description;
            p.insert(name, param);
        }
        // As rclcpp and rclpy nodes have it, given or not (the launch file passes it only
        // when asked).
        p.entry("use_sim_time".into()).or_insert_with(|| r2r::Parameter::new(ParameterValue::Bool(false)));
    }
    let use_sim_time = params.get("use_sim_time") == Some(&ParamValue::Bool(true));
    policy::set_torch_threads(cfg.torch_threads);
    let policy = Policy::load(&cfg.policy_path, cfg.device)?;
    policy.check(&cfg)?;
    let m = policy.meta();
    tracing::info!(
        policy = m.name,
        path = %cfg.policy_path.display(),
        device = %cfg.device,
        chunk_length = m.chunk_length,
        input = format!("{}x{}", m.image_width, m.image_height),
        "policy loaded and checked"
    );
    Ok(Setup { node, cfg, policy, use_sim_time })
}

/// Runs the node until SIGINT or SIGTERM.
pub fn run() -> anyhow::Result<()> {
    let Setup { mut node, cfg, policy, use_sim_time } = setup()?;
    // Real-time priorities, highest first: the control loop (on the runtime's threads),
    // receiving (with the middleware's reception threads), inference. The explanation
    // thread keeps normal priority, so that it can never delay a command.
    let priority = cfg.thread_priority;
    let below = |n: u32| if priority == 0 { 0 } else { priority.saturating_sub(n).max(1) };
    let (receive_priority, inference_priority) = (below(1), below(2));
    if priority > 0 {
        tracing::info!(control = priority, receive = receive_priority, inference = inference_priority, "SCHED_FIFO priorities");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(move || set_thread_priority(priority, "control"))
        .enable_all()
        .build()?;
    let _enter = rt.enter();

    let running = Arc::new(AtomicBool::new(true));
    let stats: SharedStats = Arc::new(Mutex::new(Stats::default()));
    let core = Arc::new(Mutex::new(Core::new(&cfg, policy.meta(), stats.clone())));
    let decoder = ImageDecoder::new(&cfg, policy.meta());
    let slot: Arc<LatestSlot<Queued>> = Arc::new(LatestSlot::new());
    let clock = if use_sim_time {
        let t = Arc::new(AtomicI64::new(0));
        // Best effort, depth 1, as rclcpp's clock QoS: also matches reliable publishers.
        let mut sub = node.subscribe::<ClockMsg>("/clock", QosProfile::sensor_data().keep_last(1))?;
        let tt = t.clone();
        rt.spawn(async move {
            while let Some(msg) = sub.next().await {
                tt.store(ros_msgs::stamp_ns(&msg.clock), Ordering::Release);
            }
        });
        tracing::info!("use_sim_time: following /clock");
        Clock::Sim(t)
    } else {
        Clock::System(node.get_ros_clock())
    };

    // Parameter services (list/get/set/describe); explanation settings can be changed
    // while running, other parameters are refused with the reason.
    let live = Arc::new(Mutex::new(LiveConfig(cfg.clone())));
    let (param_server, mut param_events) = node.make_derived_parameter_handler(live.clone())?;
    rt.spawn(param_server);
    rt.spawn(async move {
        while let Some((name, value)) = param_events.next().await {
            tracing::info!(parameter = name, ?value, "parameter changed");
        }
    });

    // Cameras and joint states are handled in the thread that spins r2r, right after
    // the take (as rclcpp's executors run callbacks): no wake-up of another thread lies
    // between a message's arrival and its decoding, and r2r's per-subscription channel
    // is drained after every spin, so it never fills and drops.
    let mut receivers: Vec<Box<dyn FnMut() + Send>> = Vec::new();
    // Cameras: best effort (sensor data), which also accepts reliable publishers.
    for (i, name) in cfg.camera_names.iter().enumerate() {
        let mut sub = SpinThreadOnly(node.subscribe_native::<Image>(&camera_topic(name), QosProfile::sensor_data())?);
        let (core, slot, clock, stats) = (core.clone(), slot.clone(), clock.clone(), stats.clone());
        receivers.push(Box::new(move || {
            while let Some(msg) = sub.try_next() {
                let (now, received) = (clock.now(), wall_ns());
                let image = Arc::new(ros_msgs::camera_image_native(msg));
                let decoded = decoder.decode(&image.raw());
                let observations = lock(&core).on_image(i, image, now, decoded);
                for obs in observations {
                    if slot.put(Queued { obs, received, queued: wall_ns() }).is_some() {
                        lock(&stats).observations_superseded += 1;
                    }
                }
            }
        }));
    }
    {
        let mut sub = node.subscribe::<JointState>(JOINT_STATES_TOPIC, QosProfile::sensor_data().keep_last(20))?;
        let (core, clock) = (core.clone(), clock.clone());
        receivers.push(Box::new(move || {
            while let Some(msg) = try_next(&mut sub) {
                let now = clock.now();
                lock(&core).on_joint_state(ros_msgs::stamp_ns(&msg.header.stamp), now, &msg.name, &msg.position);
            }
        }));
    }
    {
        // Two subscriptions: a transient-local one, so that a node started after the
        // instruction was sent (by a transient-local publisher) still receives it, and a
        // volatile one, because DDS does not match a volatile publisher (the default of
        // rclpy and rclcpp) with a transient-local subscription. A message from a
        // transient-local publisher arrives through both and is taken once.
        let latched = node.subscribe::<RosString>(INSTRUCTION_TOPIC, QosProfile::default().keep_last(1).transient_local())?;
        let volatile = node.subscribe::<RosString>(INSTRUCTION_TOPIC, QosProfile::default().keep_last(10))?;
        let mut both = futures::stream::select(latched.map(|m| (m, true)), volatile.map(|m| (m, false)));
        let core = core.clone();
        rt.spawn(async move {
            let mut merge = InstructionMerge::default();
            while let Some((msg, via_latched)) = both.next().await {
                if !merge.is_duplicate(&msg.data, via_latched, Instant::now()) {
                    lock(&core).on_instruction(&msg.data);
                }
            }
        });
    }

    // Explanations, on their own thread at their own rate, newest inference first.
    let policy = Arc::new(policy);
    let explain_slot: Arc<LatestSlot<(Observation, PolicyOutput)>> = Arc::new(LatestSlot::new());
    let explainer = {
        let publishers = ExplanationPublishers::new(&mut node, &cfg.camera_names)?;
        let (policy, slot, stats, live) = (policy.clone(), explain_slot.clone(), stats.clone(), live.clone());
        let running = running.clone();
        std::thread::Builder::new().name("explain".into()).spawn(move || {
            while let Some((obs, out)) = slot.take() {
                let (settings, rate) = {
                    let c = &lock_live(&live).0;
                    (Settings::from_config(c), c.explain_rate_hz)
                };
                let t0 = Instant::now();
                match explain::explain(&policy, &obs, &out, &settings) {
                    Ok(e) => {
                        let ms = t0.elapsed().as_secs_f64() * 1e3;
                        if !running.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Err(err) = publishers.publish(&obs, e, settings.threshold) {
                            tracing::warn!(error = %err, "publishing explanations failed");
                        }
                        let mut st = lock(&stats);
                        st.explanations += 1;
                        st.explain_ms_last = ms;
                        st.explain_ms_max = st.explain_ms_max.max(ms);
                    }
                    Err(e) => {
                        lock(&stats).explain_errors += 1;
                        tracing::warn!(error = %e, "explanation failed");
                    }
                }
                // At most `rate` a second; meanwhile newer inferences replace older ones.
                let period = Duration::from_secs_f64(1.0 / rate);
                if let Some(rest) = period.checked_sub(t0.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        })?
    };

    // Timing: the stages of each inference (`~/timing/chunk`) and the stamp of the camera
    // set behind each command (`~/timing/command`), so that a benchmark can measure
    // input-to-chunk and input-to-command latency from outside (benches/e2e.py).
    let timing_qos = QosProfile::default().keep_last(100);
    let chunk_timing =
        node.create_publisher::<InferenceTiming>(&format!("~/{}", ros_msgs::TIMING_CHUNK_TOPIC), timing_qos.clone())?;
    let command_timing = node.create_publisher::<Header>(&format!("~/{}", ros_msgs::TIMING_COMMAND_TOPIC), timing_qos)?;

    // Inference, off the async reactor.
    let inference = {
        let (core, slot, stats, policy) = (core.clone(), slot.clone(), stats.clone(), policy.clone());
        let explain_slot = explain_slot.clone();
        std::thread::Builder::new().name("inference".into()).spawn(move || {
            set_thread_priority(inference_priority, "inference");
            while let Some(Queued { obs, received, queued }) = slot.take() {
                let (t0, started) = (Instant::now(), wall_ns());
                let result = policy.infer(&obs.images, &obs.state, &obs.tokens);
                let ms = t0.elapsed().as_secs_f64() * 1e3;
                match result {
                    Ok(out) => {
                        {
                            let mut st = lock(&stats);
                            st.inferences += 1;
                            st.inference_ms_last = ms;
                            st.inference_ms_max = st.inference_ms_max.max(ms);
                        }
                        lock(&core).on_chunk(obs.stamp, obs.arrival, obs.instruction_seq, &out.actions);
                        let finished = wall_ns();
                        tracing::debug!(
                            stamp_to_received_ms = (received - obs.stamp) as f64 / 1e6,
                            decode_and_sync_ms = (queued - received) as f64 / 1e6,
                            handoff_ms = (started - queued) as f64 / 1e6,
                            forward_ms = ms,
                            "inference"
                        );
                        let timing = ros_msgs::inference_timing(obs.stamp, received, queued, started, finished);
                        let _ = chunk_timing.publish(&timing);
                        explain_slot.put((obs, out));
                    }
                    Err(e) => {
                        lock(&stats).inference_failed(&e.to_string());
                        lock(&core).on_policy_error(&e.to_string());
                    }
                }
            }
        })?
    };

    // Control loop. A change of state is published on /diagnostics at once, not only at
    // the next periodic status.
    let state_changed = Arc::new(tokio::sync::Notify::new());
    let period = Duration::from_nanos(cfg.control_period_ns() as u64);
    {
        let command_qos = QosProfile::default().keep_last(10);
        let publisher = match cfg.command_type {
            CommandType::Float64MultiArray => {
                CommandPublisher::Array(node.create_publisher::<Float64MultiArray>(COMMAND_TOPIC, command_qos)?)
            }
            CommandType::JointTrajectory => {
                CommandPublisher::Trajectory(node.create_publisher::<JointTrajectory>(COMMAND_TOPIC, command_qos)?)
            }
        };
        let predicted = node.create_publisher::<JointState>(&format!("~/{}", ros_msgs::PREDICTED_TOPIC), QosProfile::default().keep_last(10))?;
        let (core, clock, joint_names) = (core.clone(), clock.clone(), cfg.joint_names.clone());
        let state_changed = state_changed.clone();
        let dry_run = cfg.dry_run;
        if dry_run {
            tracing::warn!("dry_run: computing and explaining, publishing no commands");
        }
        rt.spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let now = clock.now();
                let out = lock(&core).tick(now);
                if out.state_changed {
                    state_changed.notify_one();
                    match out.state.level() {
                        0 => tracing::info!("{}", out.state),
                        _ => tracing::warn!("{}", out.state),
                    }
                }
                if let Some(cmd) = out.command.filter(|_| !dry_run) {
                    if let Err(e) = publisher.publish(cmd, now, &joint_names, period) {
                        tracing::error!(error = %e, "publishing the command failed");
                    }
                }
                if let Some(source) = out.source.filter(|_| !dry_run) {
                    let _ = command_timing.publish(&ros_msgs::header(source, ""));
                }
                if let Some(target) = out.target {
                    if let Err(e) = predicted.publish(&ros_msgs::predicted_joint_state(now, &joint_names, target)) {
                        tracing::warn!(error = %e, "publishing predicted joint states failed");
                    }
                }
            }
        });
    }

    // Diagnostics.
    {
        let publisher = node.create_publisher::<DiagnosticArray>(ros_msgs::DIAGNOSTICS_TOPIC, QosProfile::default())?;
        let (core, clock, stats) = (core.clone(), clock.clone(), stats.clone());
        let name = format!("{}: pipeline", node.fully_qualified_name()?);
        let every = Duration::from_secs_f64(1.0 / cfg.diagnostics_rate_hz);
        rt.spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = state_changed.notified() => {}
                }
                let state = lock(&core).state().clone();
                let msg = ros_msgs::diagnostics(clock.now(), &name, &state, &lock(&stats));
                if let Err(e) = publisher.publish(&msg) {
                    tracing::warn!(error = %e, "publishing diagnostics failed");
                }
            }
        });
    }

    tracing::info!(
        node = %node.fully_qualified_name()?,
        cameras = ?cfg.camera_names,
        control_rate_hz = cfg.control_rate_hz,
        command = COMMAND_TOPIC,
        "vla_controller running"
    );

    if receive_priority > 0 {
        let n = set_reception_thread_priority(receive_priority);
        tracing::debug!(threads = n, priority = receive_priority, "middleware reception threads");
    }
    // Spin r2r's executor in its own thread, handling cameras and joint states after each
    // spin; a short timeout keeps the shutdown prompt (messages wake the wait at once).
    let node = Arc::new(Mutex::new(node));
    let spinner = {
        let (node, running) = (node.clone(), running.clone());
        std::thread::Builder::new().name("ros-spin".into()).spawn(move || {
            set_thread_priority(receive_priority, "receive");
            while running.load(Ordering::Relaxed) {
                lock(&node).spin_once(Duration::from_millis(5));
                for receive in &mut receivers {
                    receive();
                }
            }
        })?
    };

    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    tracing::info!("shutting down");
    // Stop the timers and subscriptions first, so nothing publishes while the rest stops.
    drop(_enter);
    rt.shutdown_timeout(Duration::from_millis(200));
    running.store(false, Ordering::Relaxed);
    slot.close();
    explain_slot.close();
    let _ = spinner.join();
    let _ = inference.join();
    let _ = explainer.join();
    Ok(())
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

enum CommandPublisher {
    Array(r2r::Publisher<Float64MultiArray>),
    Trajectory(r2r::Publisher<JointTrajectory>),
}

impl CommandPublisher {
    fn publish(&self, positions: Vec<f64>, now: i64, joint_names: &[String], period: Duration) -> r2r::Result<()> {
        match self {
            CommandPublisher::Array(p) => p.publish(&ros_msgs::command_array(positions)),
            CommandPublisher::Trajectory(p) => p.publish(&ros_msgs::command_trajectory(positions, now, joint_names, period)),
        }
    }
}

/// `~/attention/language`, `~/attention/<camera>` (images for RViz and rqt),
/// `~/attention/tokens` and `~/attention/grids` (typed values for tools).
struct ExplanationPublishers {
    language: r2r::Publisher<Image>,
    overlays: Vec<r2r::Publisher<Image>>,
    tokens: r2r::Publisher<TokenAttention>,
    grids: r2r::Publisher<ActivationGrid>,
    camera_names: Vec<String>,
}

impl ExplanationPublishers {
    fn new(node: &mut r2r::Node, camera_names: &[String]) -> r2r::Result<Self> {
        let qos = QosProfile::default().keep_last(2);
        let private = |t: &str| format!("~/{t}");
        Ok(ExplanationPublishers {
            language: node.create_publisher(&private(ros_msgs::LANGUAGE_TOPIC), qos.clone())?,
            overlays: camera_names
                .iter()
                .map(|c| node.create_publisher(&private(&ros_msgs::overlay_topic(c)), qos.clone()))
                .collect::<r2r::Result<_>>()?,
            tokens: node.create_publisher(&private(ros_msgs::TOKENS_TOPIC), qos.clone())?,
            grids: node.create_publisher(&private(ros_msgs::GRIDS_TOPIC), qos)?,
            camera_names: camera_names.to_vec(),
        })
    }

    fn publish(&self, obs: &Observation, e: Explanation, threshold: f32) -> r2r::Result<()> {
        let m = ros_msgs::explanation_msgs(obs, e, threshold, &self.camera_names);
        self.tokens.publish(&m.tokens)?;
        self.language.publish(&m.language)?;
        for ((grid, overlay), publisher) in m.grids.iter().zip(&m.overlays).zip(&self.overlays) {
            self.grids.publish(grid)?;
            publisher.publish(overlay)?;
        }
        Ok(())
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
