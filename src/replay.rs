//! `vla_controller replay`: a recorded bag through the very same pipeline as the live node
//! (synchronizer, policy, smoother, safety filter, explanations), on the bag's own clock,
//! as fast as the machine allows, into a new bag; and `vla_controller compare`, which
//! turns two such outputs into a regression test.
//!
//! Unlike the live node, the replay infers every camera set (nothing is skipped for being
//! late) and applies each chunk at the time of its inputs, so the same bag and policy give
//! the same commands, bit for bit.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use r2r::{
    sensor_msgs::msg::{Image, JointState},
    std_msgs::msg::{Float64MultiArray, String as RosString},
    trajectory_msgs::msg::JointTrajectory,
    WrappedTypesupport,
};
use serde::Serialize;

use crate::bag::{BagMessage, BagReader, BagWriter};
use crate::config::{self, CommandType, Config, Params};
use crate::core::{camera_topic, Core, ImageDecoder, Observation, INSTRUCTION_TOPIC, JOINT_STATES_TOPIC};
use crate::explain::{self, Settings};
use crate::policy::{self, Policy, PolicyOutput};
use crate::ros_msgs::{self, NODE_NAME};
use crate::stats::{SharedStats, Stats};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The recording: a rosbag2 folder, or a single .mcap or .db3 file.
    pub input: PathBuf,
    /// The bag folder to write (must not exist).
    #[arg(short, long)]
    pub output: PathBuf,
    /// ROS parameters file for the node's parameters.
    #[arg(long, default_value = "config/controller.yaml")]
    pub params_file: PathBuf,
    /// A parameter override, as `-p name:=value` of `--ros-args`.
    #[arg(short = 'p', long = "param")]
    pub params: Vec<String>,
    /// `FROM:=TO`: read the bag's topic FROM as the node's input TO, e.g.
    /// `/robot/cam_front:=/camera/main/image_raw`.
    #[arg(long = "remap")]
    pub remaps: Vec<String>,
    /// Also write the first N explanations as PNG files into OUTPUT/explanations.
    #[arg(long, default_value_t = 0)]
    pub save_pngs: usize,
    /// A previous output bag to compare the commands with (see `compare`).
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Largest allowed deviation of any joint command from the previous output.
    #[arg(long, default_value_t = 1e-6)]
    pub tolerance: f64,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The new output bag.
    pub new: PathBuf,
    /// The previous output bag, the reference.
    pub old: PathBuf,
    /// Largest allowed deviation of any joint command.
    #[arg(long, default_value_t = 1e-6)]
    pub tolerance: f64,
}

/// The node's input topics, absolute, as a bag records them.
fn input_topics(cfg: &Config) -> Vec<(String, Input)> {
    let mut t: Vec<(String, Input)> =
        cfg.camera_names.iter().enumerate().map(|(i, c)| (format!("/{}", camera_topic(c)), Input::Camera(i))).collect();
    t.push((format!("/{JOINT_STATES_TOPIC}"), Input::JointStates));
    t.push((format!("/{INSTRUCTION_TOPIC}"), Input::Instruction));
    t
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    Camera(usize),
    JointStates,
    Instruction,
}

impl Input {
    fn type_name(self) -> &'static str {
        match self {
            Input::Camera(_) => "sensor_msgs/msg/Image",
            Input::JointStates => "sensor_msgs/msg/JointState",
            Input::Instruction => "std_msgs/msg/String",
        }
    }
}

fn absolute(topic: &str) -> String {
    if topic.starts_with('/') { topic.to_owned() } else { format!("/{topic}") }
}

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
    fn fill(&mut self, st: &Stats) {
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

/// The output topics, absolute.
struct Topics {
    commands: String,
    predicted: String,
    language: String,
    tokens: String,
    grids: String,
    overlays: Vec<String>,
}

impl Topics {
    fn new(cfg: &Config) -> Self {
        let private = |t: &str| format!("/{NODE_NAME}/{t}");
        Topics {
            commands: format!("/{}", ros_msgs::COMMAND_TOPIC),
            predicted: private(ros_msgs::PREDICTED_TOPIC),
            language: private(ros_msgs::LANGUAGE_TOPIC),
            tokens: private(ros_msgs::TOKENS_TOPIC),
            grids: private(ros_msgs::GRIDS_TOPIC),
            overlays: cfg.camera_names.iter().map(|c| private(&ros_msgs::overlay_topic(c))).collect(),
        }
    }
}

struct Replay<'a> {
    cfg: Config,
    policy: &'a Policy,
    core: Core,
    decoder: ImageDecoder,
    stats: SharedStats,
    writer: BagWriter,
    topics: Topics,
    period: i64,
    next_tick: Option<i64>,
    next_diagnostics: i64,
    diagnostics_every: i64,
    next_explanation: i64,
    explain_every: i64,
    pending_explanation: Option<(Observation, PolicyOutput)>,
    settings: Settings,
    pngs_left: usize,
    png_dir: PathBuf,
    diag_name: String,
}

impl Replay<'_> {
    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs every control tick up to and including `t`.
    fn ticks_until(&mut self, t: i64) -> crate::Result<()> {
        let mut next = self.next_tick.unwrap_or(t);
        while next <= t {
            let out = self.core.tick(next);
            if let Some(cmd) = out.command.filter(|_| !self.cfg.dry_run) {
                match self.cfg.command_type {
                    CommandType::Float64MultiArray => {
                        self.writer.write(&self.topics.commands, "std_msgs/msg/Float64MultiArray", next, &ros_msgs::command_array(cmd))?
                    }
                    CommandType::JointTrajectory => {
                        let msg = ros_msgs::command_trajectory(cmd, next, &self.cfg.joint_names, Duration::from_nanos(self.period as u64));
                        self.writer.write(&self.topics.commands, "trajectory_msgs/msg/JointTrajectory", next, &msg)?
                    }
                }
            }
            if let Some(target) = out.target {
                let msg = ros_msgs::predicted_joint_state(next, &self.cfg.joint_names, target);
                self.writer.write(&self.topics.predicted, "sensor_msgs/msg/JointState", next, &msg)?;
            }
            if out.state_changed || next >= self.next_diagnostics {
                self.write_diagnostics(next)?;
                if next >= self.next_diagnostics {
                    self.next_diagnostics = next + self.diagnostics_every;
                }
            }
            next += self.period;
        }
        self.next_tick = Some(next);
        Ok(())
    }

    fn write_diagnostics(&mut self, t: i64) -> crate::Result<()> {
        let msg = ros_msgs::diagnostics(t, &self.diag_name, &self.core.state().clone(), &self.stats());
        self.writer.write(ros_msgs::DIAGNOSTICS_TOPIC, "diagnostic_msgs/msg/DiagnosticArray", t, &msg)
    }

    /// Explains the newest inference once its time has come, at most `explain_rate_hz`
    /// times a second of recording.
    fn explain_if_due(&mut self, t: i64) -> crate::Result<()> {
        if t < self.next_explanation {
            return Ok(());
        }
        let Some((obs, out)) = self.pending_explanation.take() else { return Ok(()) };
        self.next_explanation = t + self.explain_every;
        let t0 = Instant::now();
        let e = match explain::explain(self.policy, &obs, &out, &self.settings) {
            Ok(e) => e,
            Err(e) => {
                self.stats().explain_errors += 1;
                tracing::warn!(error = %e, "explanation failed");
                return Ok(());
            }
        };
        {
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            let mut st = self.stats();
            st.explanations += 1;
            st.explain_ms_last = ms;
            st.explain_ms_max = st.explain_ms_max.max(ms);
        }
        if self.pngs_left > 0 {
            self.pngs_left -= 1;
            let n = self.stats().explanations - 1;
            std::fs::create_dir_all(&self.png_dir).map_err(|err| crate::Error::bag(&self.png_dir, err))?;
            let save = |img: &image::RgbImage, name: &str| {
                let p = self.png_dir.join(format!("{n:03}_{name}.png"));
                img.save(&p).map_err(|err| crate::Error::bag(&p, err))
            };
            save(&e.language, "language")?;
            for (name, overlay) in self.cfg.camera_names.iter().zip(&e.overlays) {
                save(overlay, name)?;
            }
        }
        let m = ros_msgs::explanation_msgs(&obs, e, self.settings.threshold, &self.cfg.camera_names);
        self.writer.write(&self.topics.tokens, "vla_controller_msgs/msg/TokenAttention", t, &m.tokens)?;
        self.writer.write(&self.topics.language, "sensor_msgs/msg/Image", t, &m.language)?;
        for ((grid, overlay), topic) in m.grids.iter().zip(&m.overlays).zip(&self.topics.overlays) {
            self.writer.write(&self.topics.grids, "vla_controller_msgs/msg/ActivationGrid", t, grid)?;
            self.writer.write(topic, "sensor_msgs/msg/Image", t, overlay)?;
        }
        Ok(())
    }

    fn infer(&mut self, obs: Observation) {
        let t0 = Instant::now();
        match self.policy.infer(&obs.images, &obs.state, &obs.tokens) {
            Ok(out) => {
                {
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    let mut st = self.stats();
                    st.inferences += 1;
                    st.inference_ms_last = ms;
                    st.inference_ms_max = st.inference_ms_max.max(ms);
                }
                self.core.on_chunk(obs.stamp, obs.arrival, obs.instruction_seq, &out.actions);
                self.pending_explanation = Some((obs, out));
            }
            Err(e) => {
                self.stats().inference_failed(&e.to_string());
                self.core.on_policy_error(&e.to_string());
            }
        }
    }

    /// One input message at time `now`.
    fn feed(&mut self, input: Input, node_topic: &str, msg: &BagMessage, now: i64) {
        fn decode<T: WrappedTypesupport>(data: &[u8]) -> Option<T> {
            T::from_serialized_bytes(data).ok()
        }
        let reject = |s: &mut Self, reason: &str, detail: String| {
            let mut st = s.stats();
            st.received(node_topic);
            st.rejected(node_topic, reason, &detail);
        };
        if msg.encoding != "cdr" {
            return reject(self, "message encoding is not cdr", format!("encoding `{}`", msg.encoding));
        }
        if !msg.type_name.is_empty() && msg.type_name != input.type_name() {
            let detail = format!("{} is {}, expected {}", msg.topic, msg.type_name, input.type_name());
            return reject(self, "wrong message type", detail);
        }
        match input {
            Input::Camera(i) => match decode::<Image>(&msg.data) {
                None => reject(self, "message does not deserialize", format!("{} bytes", msg.data.len())),
                Some(img) => {
                    let img = Arc::new(ros_msgs::camera_image(img));
                    let decoded = self.decoder.decode(&img.raw());
                    for obs in self.core.on_image(i, img, now, decoded) {
                        self.infer(obs);
                    }
                }
            },
            Input::JointStates => match decode::<JointState>(&msg.data) {
                None => reject(self, "message does not deserialize", format!("{} bytes", msg.data.len())),
                Some(js) => self.core.on_joint_state(ros_msgs::stamp_ns(&js.header.stamp), now, &js.name, &js.position),
            },
            Input::Instruction => match decode::<RosString>(&msg.data) {
                None => reject(self, "message does not deserialize", format!("{} bytes", msg.data.len())),
                Some(s) => self.core.on_instruction(&s.data),
            },
        }
    }
}

fn load_config(args: &ReplayArgs) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(&args.params_file).with_context(|| format!("reading {}", args.params_file.display()))?;
    let mut params: Params = config::params_from_yaml(&text, NODE_NAME)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.params_file.display()))?;
    for p in &args.params {
        let (name, value) = config::param_override(p).map_err(|e| anyhow::anyhow!("-p {e}"))?;
        params.insert(name, value);
    }
    let (cfg, unknown) = Config::from_params(&params)?;
    for name in unknown {
        tracing::warn!(parameter = name, "unknown parameter ignored (a typo?)");
    }
    Ok(cfg)
}

/// Runs the replay; returns whether it was clean (no damaged input, no missing topic, and
/// within tolerance of `--compare`).
pub fn run(args: ReplayArgs) -> anyhow::Result<bool> {
    let cfg = load_config(&args)?;
    policy::set_torch_threads(cfg.torch_threads);
    let policy = Policy::load(&cfg.policy_path, cfg.device)?;
    policy.check(&cfg)?;

    let mut remap: BTreeMap<String, String> = BTreeMap::new();
    for r in &args.remaps {
        let (from, to) = r.split_once(":=").with_context(|| format!("--remap {r}: expected FROM:=TO"))?;
        remap.insert(absolute(from), absolute(to));
    }
    let inputs = input_topics(&cfg);
    if let Some(to) = remap.values().find(|to| !inputs.iter().any(|(t, _)| t == *to)) {
        bail!("--remap target {to} is not an input of the node ({})", inputs.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(", "));
    }

    let mut reader = BagReader::open(&args.input)?;
    let stats: SharedStats = Arc::new(Mutex::new(Stats::default()));
    let period = cfg.control_period_ns();
    let mut replay = Replay {
        core: Core::new(&cfg, policy.meta(), stats.clone()),
        decoder: ImageDecoder::new(&cfg, policy.meta()),
        policy: &policy,
        stats: stats.clone(),
        writer: BagWriter::create(&args.output)?,
        topics: Topics::new(&cfg),
        period,
        next_tick: None,
        next_diagnostics: i64::MIN,
        diagnostics_every: config::secs_to_ns(1.0 / cfg.diagnostics_rate_hz),
        next_explanation: i64::MIN,
        explain_every: config::secs_to_ns(1.0 / cfg.explain_rate_hz),
        pending_explanation: None,
        settings: Settings::from_config(&cfg),
        pngs_left: args.save_pngs,
        png_dir: args.output.join("explanations"),
        diag_name: format!("/{NODE_NAME}: pipeline"),
        cfg,
    };

    let mut acc = Accounting {
        input: args.input.display().to_string(),
        output: args.output.display().to_string(),
        ..Accounting::default()
    };
    let wall = Instant::now();
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let (mut first, mut now) = (None::<i64>, i64::MIN);
    while let Some(item) = reader.next() {
        let msg = match item {
            Ok(m) => m,
            Err(e) => {
                acc.errors.push(format!("{e}; the messages before it were replayed"));
                break;
            }
        };
        *acc.read.entry(msg.topic.clone()).or_default() += 1;
        // The replay's clock: the bag's receive times, never going backwards (storage
        // order may interleave topics by a few microseconds).
        now = now.max(msg.log_time);
        first.get_or_insert(now);
        replay.ticks_until(now)?;
        let topic = remap.get(&absolute(&msg.topic)).cloned().unwrap_or_else(|| absolute(&msg.topic));
        match inputs.iter().find(|(t, _)| *t == topic) {
            Some((t, input)) => replay.feed(*input, &t[1..], &msg, now),
            None => *acc.not_inputs.entry(msg.topic.clone()).or_default() += 1,
        }
        replay.explain_if_due(now)?;
        if progress && last_progress.elapsed() > Duration::from_millis(200) {
            last_progress = Instant::now();
            let st = replay.stats();
            eprint!(
                "\rreplaying {:5.1}%  {} sets, {} commands, {:.1} s of recording",
                reader.progress() * 100.0,
                st.observations,
                st.commands,
                (now - first.unwrap_or(now)) as f64 / 1e9
            );
            let _ = std::io::stderr().flush();
        }
    }
    if progress {
        eprintln!();
    }
    replay.core.drain("end of recording: no later message to complete its set");
    if let Some(f) = first {
        replay.write_diagnostics(now)?;
        acc.bag_seconds = (now - f) as f64 / 1e9;
    }
    acc.wall_seconds = wall.elapsed().as_secs_f64();
    for (topic, input) in &inputs {
        let seen = acc.read.iter().any(|(t, _)| remap.get(&absolute(t)).unwrap_or(&absolute(t)) == topic);
        if !seen {
            acc.errors.push(format!("{}: no messages on {topic} ({})", args.input.display(), input.type_name()));
        }
    }
    acc.fill(&stats.lock().unwrap_or_else(|e| e.into_inner()));
    acc.messages_written = replay.writer.message_count();
    let out_dir = replay.writer.finish()?;
    let report = acc.summary();
    print!("{report}");
    std::fs::write(out_dir.join("accounting.json"), serde_json::to_string_pretty(&acc)?)?;
    std::fs::write(out_dir.join("accounting.txt"), &report)?;
    let mut clean = acc.errors.is_empty();
    if let Some(old) = &args.compare {
        let c = compare(&out_dir, old, args.tolerance)?;
        print!("{}", c.report);
        clean &= c.within;
    }
    Ok(clean)
}

/// Commands of an output bag, in order: (time, positions).
fn commands(path: &Path) -> anyhow::Result<Vec<(i64, Vec<f64>)>> {
    let mut out = Vec::new();
    for m in BagReader::open(path)? {
        let m = m?;
        if m.topic != format!("/{}", ros_msgs::COMMAND_TOPIC) {
            continue;
        }
        let positions = match m.type_name.as_str() {
            "std_msgs/msg/Float64MultiArray" => Float64MultiArray::from_serialized_bytes(&m.data)?.data,
            "trajectory_msgs/msg/JointTrajectory" => JointTrajectory::from_serialized_bytes(&m.data)?
                .points
                .into_iter()
                .next()
                .map(|p| p.positions)
                .unwrap_or_default(),
            other => bail!("{}: /{} has type {other}", path.display(), ros_msgs::COMMAND_TOPIC),
        };
        out.push((m.log_time, positions));
    }
    Ok(out)
}

pub struct Comparison {
    pub within: bool,
    pub report: String,
}

/// Per-joint maximum and mean deviation of the commands of `new` from those of `old`,
/// paired in order, and the first stamp where any joint deviates by more than
/// `tolerance` (or where one bag has a command the other lacks).
pub fn compare(new: &Path, old: &Path, tolerance: f64) -> anyhow::Result<Comparison> {
    let (a, b) = (commands(new)?, commands(old)?);
    let joints = a.first().or(b.first()).map_or(0, |c| c.1.len());
    let (mut max, mut sum) = (vec![0.0f64; joints], vec![0.0f64; joints]);
    let mut first_divergent: Option<i64> = None;
    for ((ta, ca), (tb, cb)) in a.iter().zip(&b) {
        if ca.len() != cb.len() || ta != tb {
            first_divergent.get_or_insert(*ta.min(tb));
            continue;
        }
        for (j, (x, y)) in ca.iter().zip(cb).enumerate() {
            let d = (x - y).abs();
            max[j] = max[j].max(d);
            sum[j] += d;
            if d > tolerance {
                first_divergent.get_or_insert(*ta);
            }
        }
    }
    let paired = a.len().min(b.len());
    if a.len() != b.len() {
        let t = if a.len() > b.len() { a[paired].0 } else { b[paired].0 };
        first_divergent.get_or_insert(t);
    }
    let mut report = format!(
        "compare {} with {}: {} and {} commands, tolerance {tolerance:e}\n",
        new.display(),
        old.display(),
        a.len(),
        b.len()
    );
    for j in 0..joints {
        report += &format!("  joint {j}: max deviation {:.3e}, mean {:.3e}\n", max[j], sum[j] / paired.max(1) as f64);
    }
    let within = first_divergent.is_none();
    match first_divergent {
        None => report += "  within tolerance\n",
        Some(t) => report += &format!("  DIVERGES: first at stamp {t} ns ({}.{:09} s)\n", t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000)),
    }
    Ok(Comparison { within, report })
}

pub fn run_compare(args: CompareArgs) -> anyhow::Result<bool> {
    let c = compare(&args.new, &args.old, args.tolerance)?;
    print!("{}", c.report);
    Ok(c.within)
}
