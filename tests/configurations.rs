//! No panic on any valid configuration. Configurations are drawn as parameter values (1
//! to 6 cameras, 1 to 12 joints, every smoothing, every command type (trajectories of 1
//! to 5 points, one every tick), explanation method and token weight method, and the edge values of every
//! parameter's range) and read through `Config::from_params`, as the node reads them; a
//! fake policy is made for each (`FakePolicy::meta_for`). The pipeline is then built
//! through the driver, as the node and the replay build it, and driven through a short
//! stream of camera images, joint states, instructions, silences, policy faults and
//! clock jumps. Nothing may panic, every command is finite, within the limits and
//! within one step of the previous command, a hold repeats the previous command
//! exactly, and every output becomes the ROS messages the node publishes.
//! `PROPTEST_CASES` sets the cases (256 by default).

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use r2r::builtin_interfaces::msg::Duration as RosDuration;
use vla_controller::core::config::{Config, ParamValue, Params};
use vla_controller::core::control::limits::JointLimits;
use vla_controller::core::inputs::CameraImage;
use vla_controller::core::pipeline::{ControlState, Pipeline};
use vla_controller::driver::{Driver, Output};
use vla_controller::explain::Settings;
use vla_controller::policy::fake::{FakePolicy, Fault};
use vla_controller::policy::{self, PolicyRunner};
use vla_controller::ros::msgs::{self, Message};

/// 2023-11-14: inputs carry wall-clock stamps.
const T0: i64 = 1_700_000_000_000_000_000;
const FRAME: i64 = 33_333_333;

/// Seconds: the edges now and then, mostly values under which the stream below (cameras
/// 0.1 ms apart, 33 ms frames) makes sets and commands.
fn secs() -> impl Strategy<Value = f64> {
    prop_oneof![1 => Just(f64::MIN_POSITIVE), 1 => Just(1e-9), 10 => 0.01f64..2.0, 1 => Just(1e9), 1 => Just(f64::MAX)]
}

fn non_negative() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(f64::MIN_POSITIVE), 0.0f64..2.0, Just(1e300), Just(f64::MAX)]
}

fn rate() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.001), Just(10_000.0), 0.001f64..1_000.0, Just(30.0)]
}

fn unit() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0]
}

fn count(max: i64) -> impl Strategy<Value = i64> {
    prop_oneof![Just(1), Just(max), 1..=max.min(64)]
}

/// Distinct names, some of them not ASCII.
fn names(prefix: &'static str, n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<String>> {
    n.prop_flat_map(move |n| {
        prop::collection::vec(prop::sample::select(vec!["", "_left", "相机", " x"]), n)
            .prop_map(move |tails| tails.iter().enumerate().map(|(i, t)| format!("{prefix}{i}{t}")).collect())
    })
}

/// One joint's lower and upper limit and largest step, from extremes to ordinary.
fn joint() -> impl Strategy<Value = (f64, f64, f64)> {
    let limits = prop_oneof![
        Just((-f64::MAX, f64::MAX)),
        Just((0.0, f64::MIN_POSITIVE)),
        Just((-1e300, 1e300)),
        (-4.0f64..4.0, prop::sample::select(vec![1e-9, 0.05, 3.0, 1e3])).prop_map(|(lo, w)| (lo, lo + w)),
    ];
    let step = prop_oneof![Just(f64::MIN_POSITIVE), Just(1e-9), 0.001f64..0.5, Just(f64::MAX)];
    (limits, step).prop_map(|((lo, hi), step)| (lo, hi, step))
}

fn string(s: &str) -> ParamValue {
    ParamValue::String(s.to_owned())
}

prop_compose! {
    /// The parameters of a valid configuration.
    fn parameters()(
        cameras in names("cam", 1..=6),
        (joint_names, joints) in names("joint", 1..=12).prop_flat_map(|n| { let k = n.len(); (Just(n), prop::collection::vec(joint(), k)) }),
        control_rate in rate(), diagnostics_rate in rate(), explain_rate in rate(),
        size in prop_oneof![4 => (1u32..=48, 1u32..=36), 1 => prop::sample::select(vec![(640, 480), (1, u32::MAX), (u32::MAX, u32::MAX)])],
        queue in count(i64::MAX), batch in count(i64::MAX),
        (max_interval, tolerance, camera_timeout, joint_timeout, lead) in (secs(), secs(), secs(), secs(), secs()),
        (age_penalty, lower_bound, ensemble_m) in (non_negative(), non_negative(), non_negative()),
        smoothing in prop::sample::select(vec!["temporal_ensemble", "exponential", "none", "rtc"]),
        alpha in prop_oneof![Just(f64::MIN_POSITIVE), Just(1.0), 0.01f64..=1.0],
        command in prop::sample::select(vec!["float64_multi_array", "joint_trajectory"]),
        // A trajectory every control tick, of 1 to 5 points: so that every tick's command
        // is seen (trajectories further apart execute their plan between messages, which
        // the live tests and the pipeline's own tests check).
        points in 1i64..=5,
        (method, token_method) in (prop::sample::select(vec!["occlusion", "policy_attention"]), prop::sample::select(vec!["auto", "occlusion", "policy_attention"])),
        (threshold, activation_alpha) in (unit(), unit()),
        (priority, threads, dry_run) in (prop::sample::select(vec![0i64, 1, 99]), prop::sample::select(vec![0i64, 1, 64]), prop::bool::weighted(0.1)),
    ) -> Params {
        let mut p = Params::new();
        let mut set = |k: &str, v: ParamValue| { p.insert(k.to_owned(), v); };
        set("camera_names", ParamValue::StringArray(cameras));
        set("joint_names", ParamValue::StringArray(joint_names));
        set("joint_lower_limits", ParamValue::DoubleArray(joints.iter().map(|j| j.0).collect()));
        set("joint_upper_limits", ParamValue::DoubleArray(joints.iter().map(|j| j.1).collect()));
        set("max_step_per_tick", ParamValue::DoubleArray(joints.iter().map(|j| j.2).collect()));
        set("control_rate_hz", ParamValue::Double(control_rate));
        set("diagnostics_rate_hz", ParamValue::Double(diagnostics_rate));
        set("explain_rate_hz", ParamValue::Double(explain_rate));
        set("image_width", ParamValue::Integer(size.0.into()));
        set("image_height", ParamValue::Integer(size.1.into()));
        set("sync_queue_size", ParamValue::Integer(queue));
        set("occlusion_batch", ParamValue::Integer(batch));
        set("sync_max_interval_s", ParamValue::Double(max_interval));
        set("joint_state_tolerance_s", ParamValue::Double(tolerance));
        set("camera_timeout_s", ParamValue::Double(camera_timeout));
        set("joint_state_timeout_s", ParamValue::Double(joint_timeout));
        set("max_stamp_lead_s", ParamValue::Double(lead));
        set("sync_age_penalty", ParamValue::Double(age_penalty));
        set("sync_inter_message_lower_bound_s", ParamValue::Double(lower_bound));
        set("ensemble_m", ParamValue::Double(ensemble_m));
        set("smoothing", string(smoothing));
        set("exponential_alpha", ParamValue::Double(alpha));
        set("command_type", string(command));
        set("trajectory_rate_hz", ParamValue::Double(control_rate));
        set("trajectory_horizon", ParamValue::Integer(points));
        set("explanation_method", string(method));
        set("token_weight_method", string(token_method));
        set("attention_threshold", ParamValue::Double(threshold));
        set("activation_alpha", ParamValue::Double(activation_alpha));
        set("thread_priority", ParamValue::Integer(priority));
        set("torch_threads", ParamValue::Integer(threads));
        set("dry_run", ParamValue::Bool(dry_run));
        p
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Every camera and a joint state, one frame later.
    Frame,
    /// A frame without camera `k` (mod the number of cameras).
    Silent(usize),
    /// A new instruction (Chinese, English, or one the pipeline rejects).
    Say(&'static str),
    /// The clock goes back by this many frames (a looping recording).
    JumpBack(i64),
    /// Time passes without any input: the node holds.
    Pause(i64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => Just(Step::Frame),
        2 => (0usize..6).prop_map(Step::Silent),
        1 => prop::sample::select(vec!["move above the red block", "移动到红色方块正上方", "🤖", "", "go\u{7}"]).prop_map(Step::Say),
        1 => (1i64..40).prop_map(Step::JumpBack),
        1 => (1i64..40).prop_map(Step::Pause),
    ]
}

/// The node's view of one run: the driver, the pipeline and what was commanded.
struct Run {
    cfg: Config,
    driver: Driver,
    pipe: Mutex<Pipeline>,
    encoding: &'static str,
    previous: Option<Vec<f64>>,
    /// The joint positions fed, each joint's midpoint between its limits.
    state: Vec<f64>,
    explained: bool,
}

impl Run {
    fn new(cfg: Config, fault: Fault, chunk_length: usize, encoding: &'static str) -> Run {
        let policy: Arc<dyn PolicyRunner> = Arc::new(FakePolicy::new(FakePolicy::meta_for(&cfg, chunk_length)).unwrap().with_fault(fault));
        if fault == Fault::None {
            policy::check(policy.as_ref(), &cfg, &cfg.policy_path).expect("a fake policy made for the configuration passes its checks");
        }
        let state = cfg.joint_lower_limits.iter().zip(&cfg.joint_upper_limits).map(|(l, u)| l / 2.0 + u / 2.0).collect();
        let driver = Driver::new(&cfg, policy, "/vla_controller");
        Run {
            pipe: driver.pipeline(&cfg, JointLimits::from_config(&cfg)),
            driver,
            cfg,
            encoding,
            previous: None,
            state,
            explained: false,
        }
    }

    /// An image of camera `cam` at `t`: of the configured size when that is small, else
    /// a small one (rejected and counted).
    fn image(&self, cam: usize, t: i64) -> Arc<CameraImage> {
        let (w, h) = (self.cfg.image_width, self.cfg.image_height);
        let (w, h) = if w <= 64 && h <= 48 { (w, h) } else { (8, 6) };
        let ch = if self.encoding == "mono8" { 1 } else if self.encoding.ends_with("a8") { 4 } else { 3 };
        let data = (0..(w * h * ch) as usize).map(|i| (i * (cam + 7) % 251) as u8).collect::<Vec<u8>>();
        Arc::new(CameraImage { stamp: t + cam as i64 * 100_000, frame_id: format!("camera_{cam}"), width: w, height: h, encoding: self.encoding.into(), step: w * ch, data: data.into() })
    }

    fn inputs(&mut self, t: i64, silent: Option<usize>) -> Result<(), TestCaseError> {
        self.driver.joint_state(&self.pipe, t, t, &self.cfg.joint_names, &self.state);
        for cam in (0..self.cfg.camera_names.len()).filter(|c| Some(*c) != silent) {
            for mut obs in self.driver.image(&self.pipe, cam, self.image(cam, t), t) {
                if !self.driver.prepare(&self.pipe, &mut obs) {
                    continue;
                }
                let result = self.driver.infer(&obs);
                let mut outputs = Vec::new();
                self.driver.apply(&self.pipe, &obs, &result, t, &mut outputs);
                self.publish(outputs)?;
                if let (Ok(out), false) = (&result, self.explained) {
                    // One explanation per run: the pictures and messages of every camera.
                    self.explained = true;
                    let explanation = self.driver.explain(obs.clone(), out, &Settings::from_config(&self.cfg));
                    prop_assert!(matches!(explanation, Some(Output::Explanation(_))), "the fake policy explains");
                    self.publish(explanation.into_iter().collect())?;
                }
            }
        }
        Ok(())
    }

    /// Control ticks at `t` and within the next frame: every command checked.
    fn ticks(&mut self, t: i64) -> Result<(), TestCaseError> {
        let period = self.cfg.control_period_ns();
        for k in 0..3 {
            let now = t + k * period;
            if k > 0 && now >= t + FRAME {
                break;
            }
            let mut outputs = Vec::new();
            self.driver.tick(&self.pipe, now, &mut outputs);
            let state = self.pipe.lock().unwrap().state().clone();
            for out in &outputs {
                if let Output::Command { points, .. } = out {
                    self.check_command(points, &state)?;
                }
            }
            let commanded = outputs.iter().any(|o| matches!(o, Output::Command { .. } | Output::CommandSource { .. }));
            prop_assert!(!self.cfg.dry_run || !commanded, "dry_run sends no commands");
            self.publish(outputs)?;
        }
        let status = self.driver.diagnostics(&self.pipe, t);
        self.publish(vec![status])
    }

    /// A command message: its points (one, or a trajectory's plan, one control period
    /// apart) finite, within the limits and each within one step of the one before.
    fn check_command(&mut self, points: &[Vec<f64>], state: &ControlState) -> Result<(), TestCaseError> {
        let c = &self.cfg;
        // From the previous command, or the measured state before the first one.
        let mut from = self.previous.clone().unwrap_or_else(|| self.state.clone());
        if state.is_hold() {
            if let Some(p) = &self.previous {
                prop_assert_eq!(&points[0], p, "a hold ({}) repeats the previous command", state);
            }
        }
        for cmd in points {
            prop_assert_eq!(cmd.len(), c.joint_names.len());
            for (i, v) in cmd.iter().enumerate() {
                prop_assert!(v.is_finite() && *v >= c.joint_lower_limits[i] && *v <= c.joint_upper_limits[i], "joint {} at {}", i, v);
            }
            for (i, (v, p)) in cmd.iter().zip(&from).enumerate() {
                let slack = 4.0 * f64::EPSILON * (v.abs() + p.abs());
                prop_assert!((v - p).abs() <= c.max_step_per_tick[i] + slack, "joint {} stepped {} -> {}", i, p, v);
            }
            from = cmd.clone();
        }
        self.previous = Some(points[0].clone());
        Ok(())
    }

    /// Every output as the messages the node publishes, checked where the conversion
    /// computes something.
    fn publish(&self, outputs: Vec<Output>) -> Result<(), TestCaseError> {
        for out in outputs {
            let (positions, period) = match &out {
                Output::Command { points, period_ns, .. } => (Some(points[0].clone()), *period_ns),
                _ => (None, 0),
            };
            for (_, msg) in msgs::messages(out) {
                prop_assert!(msg.to_cdr().is_ok(), "{} serializes", msg.type_name());
                match msg {
                    Message::Array(a) => prop_assert_eq!(Some(a.data), positions.clone()),
                    Message::Trajectory(t) if positions.is_some() => {
                        let d = &t.points[0].time_from_start;
                        prop_assert!(d.nanosec < 1_000_000_000, "{:?}", d);
                        let expected = RosDuration { sec: (period / 1_000_000_000) as i32, nanosec: (period % 1_000_000_000) as u32 };
                        prop_assert_eq!(d, &expected, "one control period");
                        prop_assert_eq!(Some(t.points[0].positions.clone()), positions.clone());
                        prop_assert_eq!(&t.joint_names, &self.cfg.joint_names);
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn every_valid_configuration_runs_and_commands_within_its_limits(
        params in parameters(),
        chunk_length in prop_oneof![Just(1usize), 2usize..30],
        fault in prop::sample::select(vec![Fault::None, Fault::None, Fault::None, Fault::NonFinite, Fault::Error]),
        encoding in prop::sample::select(vec!["rgb8", "bgr8", "rgba8", "bgra8", "mono8"]),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let (cfg, unknown) = Config::from_params(&params).expect("the drawn configuration is valid");
        prop_assert!(unknown.is_empty());
        let mut run = Run::new(cfg, fault, chunk_length, encoding);
        run.driver.instruction(&run.pipe, "move above the red block");
        let mut t = T0;
        for step in steps {
            match step {
                Step::Frame => run.inputs(t, None)?,
                Step::Silent(k) => run.inputs(t, Some(k % run.cfg.camera_names.len()))?,
                Step::Say(text) => run.driver.instruction(&run.pipe, text),
                Step::JumpBack(frames) => t -= frames * FRAME,
                Step::Pause(frames) => t += frames * FRAME,
            }
            run.ticks(t)?;
            t += FRAME;
        }
        run.driver.drain(&run.pipe, "end of the stream");
    }
}
