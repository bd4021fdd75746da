//! `vla_controller replay`: a recorded bag through the very same driver as the live
//! node (synchronizer, policy, smoother, safety filter, explanations), on the bag's own
//! clock, as fast as the machine allows, into a new bag.
//!
//! Unlike the live node, the replay infers every camera set (nothing is skipped for being
//! late) and applies each chunk at the time of its inputs, so the same bag and policy give
//! the same commands, bit for bit.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use r2r::{
    sensor_msgs::msg::{Image, JointState},
    std_msgs::msg::String as RosString,
    WrappedTypesupport,
};

use super::accounting::Accounting;
use crate::bag::{BagMessage, BagReader, BagWriter};
use crate::core::config::{self, Config, RobotDescriptionSource};
use crate::core::control::limits::JointLimits;
use crate::core::pipeline::{Observation, Pipeline};
use crate::core::stats;
use crate::core::topics::{absolute, Input, InputNames};
use crate::driver::{Driver, Output};
use crate::explain::{Explanation, Settings};
use crate::policy::{self, CheckAgainst, PolicyOutput, PolicyRunner};
use crate::ros::msgs;

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

/// The node's inputs by their absolute topic, after `--remap`.
struct Inputs {
    topics: Vec<(String, Input)>,
    remap: BTreeMap<String, String>,
}

impl Inputs {
    /// The inputs of `cfg`'s node; `language`: whether its policy takes an instruction.
    fn new(cfg: &Config, remaps: &[String], language: bool) -> anyhow::Result<Inputs> {
        let names = InputNames::new(&cfg.camera_names);
        let topics: Vec<(String, Input)> =
            names.subscribed().filter(|(i, _)| language || *i != Input::Instruction).map(|(i, t)| (absolute(t), i)).collect();
        let mut remap = BTreeMap::new();
        for r in remaps {
            let (from, to) = r.split_once(":=").with_context(|| format!("--remap {r}: expected FROM:=TO"))?;
            remap.insert(absolute(from), absolute(to));
        }
        if let Some(to) = remap.values().find(|to| !topics.iter().any(|(t, _)| t == *to)) {
            let all: Vec<&str> = topics.iter().map(|(t, _)| t.as_str()).collect();
            bail!("--remap target {to} is not an input of the node ({})", all.join(", "));
        }
        Ok(Inputs { topics, remap })
    }

    /// The node's topic (relative) and input a bag topic feeds, if any.
    fn find(&self, bag_topic: &str) -> Option<(&str, Input)> {
        let topic = absolute(bag_topic);
        let topic = self.remap.get(&topic).unwrap_or(&topic);
        self.topics.iter().find(|(t, _)| t == topic).map(|(t, i)| (&t[1..], *i))
    }
}

/// The first N explanations as PNG files.
struct Pngs {
    left: usize,
    dir: PathBuf,
}

impl Pngs {
    fn save(&mut self, n: u64, e: &Explanation, camera_names: &[String]) -> crate::Result<()> {
        if self.left == 0 {
            return Ok(());
        }
        self.left -= 1;
        std::fs::create_dir_all(&self.dir).map_err(|err| crate::Error::bag(&self.dir, err))?;
        let save = |img: &image::RgbImage, name: &str| {
            let p = self.dir.join(format!("{n:03}_{name}.png"));
            img.save(&p).map_err(|err| crate::Error::bag(&p, err))
        };
        if let Some(language) = &e.language {
            save(language, "language")?;
        }
        for (name, overlay) in camera_names.iter().zip(&e.overlays) {
            save(overlay, name)?;
        }
        Ok(())
    }
}

/// A periodic activity on the recording's clock.
struct Every {
    next: i64,
    period: i64,
}

impl Every {
    fn new(rate_hz: f64) -> Self {
        Every { next: i64::MIN, period: config::secs_to_ns(1.0 / rate_hz) }
    }

    /// Whether it is due at `t`; if so, the next time is one period later.
    fn due(&mut self, t: i64) -> bool {
        let due = t >= self.next;
        if due {
            self.next = t + self.period;
        }
        due
    }
}

struct Replay {
    driver: Driver,
    pipe: Mutex<Pipeline>,
    writer: BagWriter,
    camera_names: Vec<String>,
    period: i64,
    next_tick: Option<i64>,
    diagnostics: Every,
    explanations: Every,
    pending_explanation: Option<(Observation, PolicyOutput)>,
    settings: Settings,
    pngs: Pngs,
    outputs: Vec<Output>,
}

impl Replay {
    /// Writes an output's messages at recording time `t`. The timing of commands is the
    /// live node's latency measurement and means nothing on a recording: not written.
    fn write(&mut self, t: i64, out: Output) -> crate::Result<()> {
        if let Output::CommandSource { .. } = out {
            return Ok(());
        }
        for (topic, msg) in msgs::messages(out) {
            let data = msg.to_cdr().map_err(|e| crate::Error::bag(self.writer.dir(), format!("serializing {}: {e}", msg.type_name())))?;
            self.writer.write_raw(&topic.absolute(&self.camera_names), msg.type_name(), t, &data)?;
        }
        Ok(())
    }

    /// Runs every control tick up to and including `t`.
    fn ticks_until(&mut self, t: i64) -> crate::Result<()> {
        let mut next = self.next_tick.unwrap_or(t);
        while next <= t {
            let changed = self.driver.tick(&self.pipe, next, &mut self.outputs).is_some();
            for out in std::mem::take(&mut self.outputs) {
                self.write(next, out)?;
            }
            if self.diagnostics.due(next) || changed {
                self.write(next, self.driver.diagnostics(&self.pipe, next))?;
            }
            next += self.period;
        }
        self.next_tick = Some(next);
        Ok(())
    }

    /// Explains the newest inference once its time has come, at most `explain_rate_hz`
    /// times a second of recording.
    fn explain_if_due(&mut self, t: i64) -> crate::Result<()> {
        if self.pending_explanation.is_none() || !self.explanations.due(t) {
            return Ok(());
        }
        let Some((obs, out)) = self.pending_explanation.take() else { return Ok(()) };
        let Some(output) = self.driver.explain(obs, &out, &self.settings) else { return Ok(()) };
        if let Output::Explanation(e) = &output {
            let explanation = &e.explanation;
            let n = stats::lock(self.driver.stats()).explanations - 1;
            self.pngs.save(n, explanation, &self.camera_names)?;
        }
        self.write(t, output)
    }

    /// Infers `obs` (unless real-time chunking waits) and applies its chunk at the time
    /// of its inputs.
    fn infer(&mut self, mut obs: Observation) {
        if !self.driver.prepare(&self.pipe, &mut obs) {
            return;
        }
        let result = self.driver.infer(&obs);
        self.driver.apply(&self.pipe, &obs, &result, obs.arrival, &mut self.outputs);
        if let Ok(out) = result {
            self.pending_explanation = Some((obs, out));
        }
    }

    /// One input message at time `now`, fed to the node's input `topic`.
    fn feed(&mut self, input: Input, topic: &str, msg: &BagMessage, now: i64) {
        fn decode<T: WrappedTypesupport>(data: &[u8]) -> Option<T> {
            msgs::from_cdr(data).ok()
        }
        let reject = |s: &Self, reason: &str, detail: String| {
            let mut st = stats::lock(s.driver.stats());
            st.received(topic);
            st.rejected(topic, reason, &detail);
        };
        if msg.encoding != "cdr" {
            return reject(self, "message encoding is not cdr", format!("encoding `{}`", msg.encoding));
        }
        if !msg.type_name.is_empty() && msg.type_name != input.type_name() {
            let detail = format!("{} is {}, expected {}", msg.topic, msg.type_name, input.type_name());
            return reject(self, "wrong message type", detail);
        }
        let undecodable = || format!("{} bytes", msg.data.len());
        match input {
            Input::Camera(i) => match decode::<Image>(&msg.data) {
                None => reject(self, "message does not deserialize", undecodable()),
                Some(img) => {
                    for obs in self.driver.image(&self.pipe, i, Arc::new(msgs::camera_image(img)), now) {
                        self.infer(obs);
                    }
                }
            },
            Input::JointStates => match decode::<JointState>(&msg.data) {
                None => reject(self, "message does not deserialize", undecodable()),
                Some(js) => self.driver.joint_state(&self.pipe, msgs::stamp_ns(&js.header.stamp), now, &js.name, &js.position),
            },
            Input::Instruction => match decode::<RosString>(&msg.data) {
                None => reject(self, "message does not deserialize", undecodable()),
                Some(s) => self.driver.instruction(&self.pipe, &s.data),
            },
            Input::Policy => {}
        }
    }

    /// Every message of the recording, in order, on the recording's clock: the bag's
    /// receive times, never going backwards (storage order may interleave topics by a
    /// few microseconds). Returns the first and last time.
    fn read_all(&mut self, reader: &mut BagReader, inputs: &Inputs, acc: &mut Accounting, quiet: bool) -> crate::Result<Option<(i64, i64)>> {
        let progress = !quiet && std::io::stderr().is_terminal();
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
            now = now.max(msg.log_time);
            first.get_or_insert(now);
            self.ticks_until(now)?;
            match inputs.find(&msg.topic) {
                Some((topic, input)) => {
                    self.feed(input, topic, &msg, now);
                    // The chunks the message completed, at the time they were computed.
                    for out in std::mem::take(&mut self.outputs) {
                        self.write(now, out)?;
                    }
                }
                None => *acc.not_inputs.entry(msg.topic.clone()).or_default() += 1,
            }
            self.explain_if_due(now)?;
            if progress && last_progress.elapsed() > Duration::from_millis(200) {
                last_progress = Instant::now();
                let st = stats::lock(self.driver.stats());
                let seconds = (now - first.unwrap_or(now)) as f64 / 1e9;
                eprint!("\rreplaying {:5.1}%  {} sets, {} commands, {seconds:.1} s of recording", reader.progress() * 100.0, st.observations, st.commands);
                let _ = std::io::stderr().flush();
            }
        }
        if progress {
            eprintln!();
        }
        Ok(first.map(|f| (f, now)))
    }
}

/// The node's parameters from a parameters file and `-p name:=value` overrides, as the
/// node reads them.
pub fn load_config(params_file: &std::path::Path, overrides: &[String]) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(params_file).with_context(|| format!("reading {}", params_file.display()))?;
    let mut params = config::yaml::params_from_yaml(&text, crate::core::topics::NODE_NAME)
        .map_err(|e| anyhow::anyhow!("{}: {e}", params_file.display()))?;
    for p in overrides {
        let (name, value) = config::yaml::param_override(p).map_err(|e| anyhow::anyhow!("-p {e}"))?;
        params.insert(name, value);
    }
    Ok(Config::load(&params)?)
}

/// Runs the replay; returns whether it was clean (no damaged input, no missing topic, and
/// within tolerance of `--compare`).
pub fn run(args: ReplayArgs) -> anyhow::Result<bool> {
    let cfg = load_config(&args.params_file, &args.params)?;
    let policy = Arc::new(policy::load(&cfg, CheckAgainst::Config)?);
    let inputs = Inputs::new(&cfg, &args.remaps, policy.tokenizer().is_some())?;
    if cfg.robot_description_source == RobotDescriptionSource::Topic {
        bail!("robot_description_source is topic, which a replay does not have: pass the URDF with -p robot_description_source:=parameter and robot_description in a parameters file");
    }
    let limits = JointLimits::resolve(&cfg, Some(&cfg.robot_description))?;
    let mut reader = BagReader::open(&args.input)?;
    let driver = Driver::new(&cfg, policy, &Driver::default_node_name());
    let mut replay = Replay {
        pipe: driver.pipeline(&cfg, limits),
        driver,
        writer: BagWriter::create(&args.output)?,
        camera_names: cfg.camera_names.clone(),
        period: cfg.control_period_ns(),
        next_tick: None,
        diagnostics: Every::new(cfg.diagnostics_rate_hz),
        explanations: Every::new(cfg.explain_rate_hz),
        pending_explanation: None,
        settings: Settings::from_config(&cfg),
        pngs: Pngs { left: args.save_pngs, dir: args.output.join("explanations") },
        outputs: Vec::new(),
    };
    let mut acc = Accounting { input: args.input.display().to_string(), output: args.output.display().to_string(), ..Accounting::default() };
    let wall = Instant::now();
    let span = replay.read_all(&mut reader, &inputs, &mut acc, args.quiet)?;
    replay.driver.drain(&replay.pipe, "end of recording: no later message to complete its set");
    if let Some((first, last)) = span {
        replay.write(last, replay.driver.diagnostics(&replay.pipe, last))?;
        acc.bag_seconds = (last - first) as f64 / 1e9;
    }
    acc.wall_seconds = wall.elapsed().as_secs_f64();
    for (topic, input) in &inputs.topics {
        if !acc.read.keys().any(|t| inputs.find(t).is_some_and(|(_, i)| i == *input)) {
            acc.errors.push(format!("{}: no messages on {topic} ({})", args.input.display(), input.type_name()));
        }
    }
    acc.fill(&stats::lock(replay.driver.stats()));
    acc.messages_written = replay.writer.message_count();
    let out_dir = replay.writer.finish()?;
    let report = acc.summary();
    print!("{report}");
    std::fs::write(out_dir.join("accounting.json"), serde_json::to_string_pretty(&acc)?)?;
    std::fs::write(out_dir.join("accounting.txt"), &report)?;
    let mut clean = acc.errors.is_empty();
    if let Some(old) = &args.compare {
        let c = super::compare::compare(&out_dir, old, args.tolerance)?;
        print!("{}", c.report);
        clean &= c.within;
    }
    Ok(clean)
}
