//! The node's configuration. Every parameter is declared once, in the table below: its
//! name, type, default, one-line description, whether it can change while the node runs,
//! and the rule its value must keep. From that one declaration come the typed [`Config`]
//! field, the reading and validation of a parameters file or a run-time change, the
//! parameters the node declares (so `ros2 param get/describe` show them), and the check
//! that `config/controller.yaml` documents every one of them (as ros2_controllers'
//! generate_parameter_library does from its YAML).
//!
//! Adapters turn ROS parameter values into [`ParamValue`], so this module needs no ROS.

pub mod value;
pub mod yaml;

use std::fmt;
use std::path::PathBuf;

pub use value::{ParamSpec, ParamType, ParamValue, Params, Rule};
use value::{choice_param, doc_line, Choice};

use crate::error::{Error, Result};

/// Where the policy runs: `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    pub fn parse(s: &str) -> Option<Device> {
        match s {
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda(0)),
            _ => s.strip_prefix("cuda:")?.parse().ok().map(Device::Cuda),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl ParamType for Device {
    const ROS_TYPE: &'static str = "string";

    fn from_value(v: &ParamValue) -> std::result::Result<Self, String> {
        Device::parse(&String::from_value(v)?).ok_or_else(|| "expected cpu, cuda or cuda:N".to_owned())
    }

    fn to_value(&self) -> ParamValue {
        ParamValue::String(self.to_string())
    }
}

/// Which smoother blends consecutive chunks (the `smoothing` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmoothingKind {
    TemporalEnsemble,
    Exponential,
    None,
    Rtc,
}

impl Choice for SmoothingKind {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("temporal_ensemble", SmoothingKind::TemporalEnsemble),
        ("exponential", SmoothingKind::Exponential),
        ("none", SmoothingKind::None),
        ("rtc", SmoothingKind::Rtc),
    ];
}
choice_param!(SmoothingKind);

/// How consecutive action chunks are blended into one command per control tick, with
/// the weight of the chosen smoother.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoothing {
    /// ACT temporal ensembling: every chunk that has an action for this tick contributes,
    /// weighted `exp(-m * i)` with `i = 0` the oldest chunk.
    TemporalEnsemble { m: f64 },
    /// The newest chunk's action, low-passed: `y = alpha * x + (1 - alpha) * y_prev`.
    Exponential { alpha: f64 },
    /// The newest chunk's action as it is.
    None,
    /// Real-time chunking of a flow-matching policy: the next chunk is computed when
    /// the running one has `execution_horizon` actions left, its first actions (the
    /// inference delay: `fixed_delay` ticks, or measured when 0) frozen to the running
    /// chunk's and the rest of the overlap guided towards it (guidance at most
    /// `max_guidance_weight`); each chunk then runs as it is.
    Rtc { execution_horizon: usize, max_guidance_weight: f64, fixed_delay: usize },
}

/// The message type of the command topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandType {
    /// std_msgs/Float64MultiArray: what forward_command_controller takes.
    Float64MultiArray,
    /// trajectory_msgs/JointTrajectory: the next actions of the smoothed plan, what
    /// joint_trajectory_controller takes.
    JointTrajectory,
}

impl Choice for CommandType {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("float64_multi_array", CommandType::Float64MultiArray),
        ("joint_trajectory", CommandType::JointTrajectory),
    ];
}
choice_param!(CommandType);

/// Where the joint limits come from besides the parameters file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RobotDescriptionSource {
    /// The parameters file alone.
    None,
    /// The `robot_description` parameter (a URDF string).
    Parameter,
    /// The `robot_description` topic (std_msgs/String, transient local), as
    /// robot_state_publisher serves it.
    Topic,
}

impl Choice for RobotDescriptionSource {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("none", RobotDescriptionSource::None),
        ("parameter", RobotDescriptionSource::Parameter),
        ("topic", RobotDescriptionSource::Topic),
    ];
}
choice_param!(RobotDescriptionSource);

/// Where the explanations' patch grids come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Each patch replaced by the image's mean colour, the change of the chunk measured.
    Occlusion,
    /// The policy's own attention maps, returned with every inference.
    PolicyAttention,
}

impl Choice for Method {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("occlusion", Method::Occlusion), ("policy_attention", Method::PolicyAttention)];
}
choice_param!(Method);

/// Where the language heatmap's token weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMethod {
    /// The policy's own token weights when it returns them, token occlusion otherwise.
    Auto,
    /// Each token masked in turn, the change of the chunk measured: what the action
    /// depends on, whatever the policy's attention says (one forward pass per token).
    Occlusion,
    /// The policy's own token weights, returned with every inference.
    PolicyAttention,
}

impl Choice for TokenMethod {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", TokenMethod::Auto),
        ("occlusion", TokenMethod::Occlusion),
        ("policy_attention", TokenMethod::PolicyAttention),
    ];
}
choice_param!(TokenMethod);

/// Declares the parameters: the [`Config`] struct (one field per parameter, documented
/// by its description), its defaults, the table [`PARAMETERS`], and the reading and
/// writing of [`Params`]. Each entry:
///
/// ```text
/// /// One-line description.
/// name: Type = default, Rule, startup | runtime;
/// ```
macro_rules! parameters {
    ($( #[doc = $doc:literal] $name:ident : $ty:ty = $default:expr, $rule:expr, $when:ident; )*) => {
        /// The node's parameters, typed and validated (see the module documentation).
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( #[doc = $doc] pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )* }
            }
        }

        /// Every parameter the node declares, in the order of `config/controller.yaml`.
        pub const PARAMETERS: &[ParamSpec] = &[
            $( ParamSpec {
                name: stringify!($name),
                ros_type: <$ty as ParamType>::ROS_TYPE,
                description: doc_line($doc),
                runtime: parameters!(@runtime $when),
                rule: $rule,
            }, )*
        ];

        impl Config {
            /// Each parameter read from `params` (its default when absent), type and rule
            /// checked; checks between parameters are [`Config::validate`]'s.
            fn read(params: &Params) -> Result<Config> {
                let d = Config::default();
                Ok(Config { $( $name: read_param(params, stringify!($name), d.$name, $rule)?, )* })
            }

            /// The parameters of this configuration as ROS values, to declare them on the
            /// node so that `ros2 param get` shows what is in effect, defaults included.
            pub fn to_params(&self) -> Params {
                let mut p = Params::new();
                $( p.insert(stringify!($name).to_owned(), ParamType::to_value(&self.$name)); )*
                p
            }
        }
    };
    (@runtime runtime) => { true };
    (@runtime startup) => { false };
}

parameters! {
    /// TorchScript policy file; relative paths are taken from the working directory
    policy_path: PathBuf = PathBuf::from("policy/demo_policy.pt"), Rule::Any, startup;
    /// cpu, cuda or cuda:N
    device: Device = Device::Cpu, Rule::Any, startup;
    /// libtorch intra-op threads, 0 for libtorch's default
    torch_threads: usize = 1, Rule::AtLeast(0), startup;
    /// real-time (SCHED_FIFO) priority of the receive, inference and control threads, 0 for none
    thread_priority: u32 = 50, Rule::Priority, startup;
    /// cameras, read from camera/<name>/image_raw, in the policy's order
    camera_names: Vec<String> = ["main", "side", "top"].map(String::from).to_vec(), Rule::Names, startup;
    /// expected camera image width in pixels, for version-1 policies (version 2 names its own)
    image_width: u32 = 640, Rule::AtLeast(1), startup;
    /// expected camera image height in pixels, for version-1 policies (version 2 names its own)
    image_height: u32 = 480, Rule::AtLeast(1), startup;
    /// the robot's joints, in command order; each must be an action of the policy
    joint_names: Vec<String> = ["shoulder_pan", "shoulder_lift", "elbow", "wrist_pitch", "wrist_roll", "gripper"]
        .map(String::from).to_vec(), Rule::Names, startup;
    /// robot_joint:policy_joint renamings for joints the policy names differently
    joint_name_map: Vec<String> = Vec::new(), Rule::NamePairs, startup;
    /// command rate, must equal the policy's
    control_rate_hz: f64 = 50.0, Rule::Rate, startup;
    /// ApproximateTime queue size per camera
    sync_queue_size: usize = 10, Rule::AtLeast(1), startup;
    /// largest stamp spread within a camera set
    sync_max_interval_s: f64 = 0.02, Rule::Positive, startup;
    /// ApproximateTime age penalty
    sync_age_penalty: f64 = 0.1, Rule::NonNegative, startup;
    /// least time between two frames of one camera
    sync_inter_message_lower_bound_s: f64 = 0.015, Rule::NonNegative, startup;
    /// largest stamp distance between a camera set and its joint state
    joint_state_tolerance_s: f64 = 0.05, Rule::Positive, startup;
    /// hold position when a camera is silent this long
    camera_timeout_s: f64 = 0.5, Rule::Positive, startup;
    /// hold position when joint_states is silent this long
    joint_state_timeout_s: f64 = 0.25, Rule::Positive, startup;
    /// reject camera images and joint states stamped further ahead of the node's clock
    max_stamp_lead_s: f64 = 1.0, Rule::Positive, startup;
    /// temporal_ensemble, exponential, none or rtc (real-time chunking, flow-matching policies)
    smoothing: SmoothingKind = SmoothingKind::TemporalEnsemble, Rule::Any, startup;
    /// temporal ensembling weight exp(-m*i), i = 0 the oldest chunk
    ensemble_m: f64 = 0.05, Rule::NonNegative, startup;
    /// exponential filter weight of the new action
    exponential_alpha: f64 = 0.5, Rule::OpenUnit, startup;
    /// rtc: actions left in the running chunk when the next one is computed
    rtc_execution_horizon: usize = 10, Rule::AtLeast(1), startup;
    /// rtc: the largest guidance weight towards the running chunk (beta)
    rtc_max_guidance_weight: f64 = 5.0, Rule::Positive, startup;
    /// rtc: inference delay in control ticks, 0 to measure it (the replay then takes 0)
    rtc_inference_delay: usize = 0, Rule::AtLeast(0), startup;
    /// tests and benchmarks only: each chunk is handed over this much later (seconds)
    test_added_inference_delay_s: f64 = 0.0, Rule::NonNegative, startup;
    /// lower position limit per joint
    joint_lower_limits: Vec<f64> = vec![-1.6, 0.0, -3.1, -2.4, -1.0, 0.0], Rule::Finite, startup;
    /// upper position limit per joint
    joint_upper_limits: Vec<f64> = vec![1.6, 2.6, 0.0, 0.4, 1.0, 0.06], Rule::Finite, startup;
    /// largest command change per joint per control tick
    max_step_per_tick: Vec<f64> = vec![0.05, 0.05, 0.05, 0.05, 0.05, 0.01], Rule::Finite, startup;
    /// float64_multi_array or joint_trajectory
    command_type: CommandType = CommandType::Float64MultiArray, Rule::Any, startup;
    /// rate of /diagnostics
    diagnostics_rate_hz: f64 = 1.0, Rule::Rate, startup;
    /// heatmap: weights under this fraction of the largest are drawn neutral
    attention_threshold: f64 = 0.3, Rule::Unit, runtime;
    /// overlay: weight of the colour map over the camera image
    activation_alpha: f64 = 0.4, Rule::Unit, runtime;
    /// explanations per second at most, newest inference first
    explain_rate_hz: f64 = 5.0, Rule::Rate, runtime;
    /// occlusion or policy_attention
    explanation_method: Method = Method::Occlusion, Rule::Any, runtime;
    /// token weights: auto (the policy's own, else occlusion), occlusion or policy_attention
    token_weight_method: TokenMethod = TokenMethod::Auto, Rule::Any, runtime;
    /// occluded copies per forward pass
    occlusion_batch: usize = 16, Rule::AtLeast(1), startup;
    /// publish explanations and predicted motion but no commands
    dry_run: bool = false, Rule::Any, runtime;
    /// false: start disabled (holding) until enabled through ~/enable
    start_enabled: bool = true, Rule::Any, startup;
    /// joints of joint_names sent on gripper_commands instead of joint_commands
    gripper_joints: Vec<String> = Vec::new(), Rule::DistinctNames, startup;
    /// joint_trajectory: points per trajectory, one per control period; 1 for one point per tick
    trajectory_horizon: usize = 10, Rule::AtLeast(1), startup;
    /// joint_trajectory: trajectories per second, when trajectory_horizon > 1
    trajectory_rate_hz: f64 = 10.0, Rule::Positive, startup;
    /// none, parameter or topic: the robot description whose joint limits apply
    robot_description_source: RobotDescriptionSource = RobotDescriptionSource::None, Rule::Any, startup;
    /// the URDF, with robot_description_source parameter
    robot_description: String = String::new(), Rule::Any, startup;
    /// with robot_description_source topic: longest wait for it at start-up
    robot_description_timeout_s: f64 = 10.0, Rule::Positive, startup;
    /// a goal has settled when no joint's commanded speed exceeds this (units per second)...
    goal_settle_speed: f64 = 0.05, Rule::Positive, startup;
    /// ...for this long
    goal_settle_time_s: f64 = 0.5, Rule::Positive, startup;
    /// feedback messages of ~/execute_instruction per second
    goal_feedback_rate_hz: f64 = 5.0, Rule::Positive, startup;
    /// window of the rates, stamp spreads and latencies in /diagnostics
    diagnostics_window_s: f64 = 5.0, Rule::Positive, startup;
    /// camera sync WARN above this stamp spread within a set (largest in the window)
    diagnostics_spread_warn_s: f64 = 0.015, Rule::Positive, startup;
    /// input rates WARN when a camera's rate is below this
    diagnostics_camera_rate_warn_hz: f64 = 15.0, Rule::NonNegative, startup;
    /// input rates WARN when the rate of joint_states is below this
    diagnostics_joint_state_rate_warn_hz: f64 = 50.0, Rule::NonNegative, startup;
    /// inference WARN above this 99th percentile of the forward time
    diagnostics_inference_warn_ms: f64 = 100.0, Rule::Positive, startup;
    /// inference ERROR above this 99th percentile of the forward time
    diagnostics_inference_error_ms: f64 = 500.0, Rule::Positive, startup;
}

/// Parameters every ROS node has; accepted without being ours.
const ROS_PARAMETERS: &[&str] = &["use_sim_time", "start_type_description_service"];

fn read_param<T: ParamType>(params: &Params, name: &str, default: T, rule: Rule) -> Result<T> {
    let Some(v) = params.get(name) else { return Ok(default) };
    rule.check(v).map_err(|why| Error::param(name, v, why))?;
    T::from_value(v).map_err(|why| Error::param(name, v, why))
}

impl Config {
    /// Reads and validates the configuration. Missing parameters take their defaults;
    /// every error names the parameter and the value. Returns the names of parameters
    /// that were set but are not ours (most likely typos), for the caller to warn about.
    pub fn from_params(params: &Params) -> Result<(Config, Vec<String>)> {
        let cfg = Config::read(params)?;
        cfg.validate()?;
        let unknown = params
            .keys()
            .filter(|k| !PARAMETERS.iter().any(|p| p.name == k.as_str()) && !ROS_PARAMETERS.contains(&k.as_str()))
            .cloned()
            .collect();
        Ok((cfg, unknown))
    }

    /// [`Config::from_params`], warning about each parameter that is not ours.
    pub fn load(params: &Params) -> Result<Config> {
        let (cfg, unknown) = Config::from_params(params)?;
        for name in unknown {
            tracing::warn!(parameter = name, "unknown parameter ignored (a typo?)");
        }
        Ok(cfg)
    }

    /// Checks between parameters.
    pub fn validate(&self) -> Result<()> {
        self.validate_limits()?;
        self.validate_outputs()?;
        if self.robot_description_source == RobotDescriptionSource::Parameter && self.robot_description.trim().is_empty() {
            return Err(Error::param("robot_description", "\"\"", "robot_description_source is parameter: give the URDF"));
        }
        if self.diagnostics_inference_error_ms < self.diagnostics_inference_warn_ms {
            let why = format!("must not be below diagnostics_inference_warn_ms ({})", self.diagnostics_inference_warn_ms);
            return Err(Error::param("diagnostics_inference_error_ms", self.diagnostics_inference_error_ms, why));
        }
        Ok(())
    }

    /// One limit per joint; with a robot description, also none (`[]`: its limits as
    /// they are).
    fn validate_limits(&self) -> Result<()> {
        let n = self.joint_names.len();
        let optional = self.robot_description_source != RobotDescriptionSource::None;
        for (name, v) in [
            ("joint_lower_limits", &self.joint_lower_limits),
            ("joint_upper_limits", &self.joint_upper_limits),
            ("max_step_per_tick", &self.max_step_per_tick),
        ] {
            if v.len() != n && !(optional && v.is_empty()) {
                let also = if optional { ", or none to keep the robot description's" } else { "" };
                return Err(Error::param(name, format!("{v:?}"), format!("needs one value per joint ({n} joints in joint_names){also}")));
            }
        }
        for (i, name) in self.joint_names.iter().enumerate() {
            if let (Some(lo), Some(hi)) = (self.joint_lower_limits.get(i), self.joint_upper_limits.get(i)) {
                if lo >= hi {
                    return Err(Error::param(
                        "joint_lower_limits",
                        format!("{:?}", self.joint_lower_limits),
                        format!("joint `{name}`: lower limit {lo} is not below upper limit {hi}"),
                    ));
                }
            }
            if self.max_step_per_tick.get(i).is_some_and(|s| *s <= 0.0) {
                return Err(Error::param("max_step_per_tick", format!("{:?}", self.max_step_per_tick), format!("joint `{name}`: must be > 0")));
            }
        }
        Ok(())
    }

    /// Gripper joints among the joints, and a trajectory long enough to reach the next.
    fn validate_outputs(&self) -> Result<()> {
        if let Some(g) = self.gripper_joints.iter().find(|g| !self.joint_names.contains(g)) {
            return Err(Error::param("gripper_joints", format!("{:?}", self.gripper_joints), format!("`{g}` is not in joint_names")));
        }
        if self.gripper_joints.len() == self.joint_names.len() {
            return Err(Error::param("gripper_joints", format!("{:?}", self.gripper_joints), "leaves no joint for joint_commands"));
        }
        let every = self.trajectory_every();
        if self.plan_len() > 1 && (self.plan_len() as i64) < every {
            let why = format!(
                "{} points ({:.0} ms) do not reach the next trajectory, {every} control periods later (trajectory_rate_hz {}); \
                 raise it to {every} or more, or raise trajectory_rate_hz",
                self.plan_len(),
                self.plan_len() as f64 * 1e3 / self.control_rate_hz,
                self.trajectory_rate_hz
            );
            return Err(Error::param("trajectory_horizon", self.trajectory_horizon, why));
        }
        Ok(())
    }

    /// The declaration of parameter `name`.
    pub fn spec(name: &str) -> Option<&'static ParamSpec> {
        PARAMETERS.iter().find(|p| p.name == name)
    }

    /// Applies a run-time change of a `runtime` parameter, validated as at start-up.
    pub fn with_runtime_change(&self, name: &str, value: &ParamValue) -> Result<Config> {
        if !Config::spec(name).is_some_and(|p| p.runtime) {
            return Err(Error::param(name, value, "takes effect only when the node restarts"));
        }
        let mut p = self.to_params();
        p.insert(name.to_owned(), value.clone());
        Ok(Config::from_params(&p)?.0)
    }

    /// The chosen smoother with its weight.
    pub fn smoothing(&self) -> Smoothing {
        match self.smoothing {
            SmoothingKind::TemporalEnsemble => Smoothing::TemporalEnsemble { m: self.ensemble_m },
            SmoothingKind::Exponential => Smoothing::Exponential { alpha: self.exponential_alpha },
            SmoothingKind::None => Smoothing::None,
            SmoothingKind::Rtc => Smoothing::Rtc {
                execution_horizon: self.rtc_execution_horizon,
                max_guidance_weight: self.rtc_max_guidance_weight,
                fixed_delay: self.rtc_inference_delay,
            },
        }
    }

    /// This configuration with smoother `s` (and its weight).
    pub fn with_smoothing(mut self, s: Smoothing) -> Config {
        match s {
            Smoothing::TemporalEnsemble { m } => (self.smoothing, self.ensemble_m) = (SmoothingKind::TemporalEnsemble, m),
            Smoothing::Exponential { alpha } => (self.smoothing, self.exponential_alpha) = (SmoothingKind::Exponential, alpha),
            Smoothing::None => self.smoothing = SmoothingKind::None,
            Smoothing::Rtc { execution_horizon, max_guidance_weight, fixed_delay } => {
                self.smoothing = SmoothingKind::Rtc;
                self.rtc_execution_horizon = execution_horizon;
                self.rtc_max_guidance_weight = max_guidance_weight;
                self.rtc_inference_delay = fixed_delay;
            }
        }
        self
    }

    /// Control period in nanoseconds.
    pub fn control_period_ns(&self) -> i64 {
        (1e9 / self.control_rate_hz).round() as i64
    }

    /// Points per command: the trajectory horizon with `command_type` joint_trajectory,
    /// else one.
    pub fn plan_len(&self) -> usize {
        match self.command_type {
            CommandType::JointTrajectory => self.trajectory_horizon,
            CommandType::Float64MultiArray => 1,
        }
    }

    /// Control ticks from one command message to the next: every tick, except for
    /// multi-point trajectories, which go out at `trajectory_rate_hz` (rounded to whole
    /// control periods, at most one per tick).
    pub fn trajectory_every(&self) -> i64 {
        if self.plan_len() <= 1 {
            return 1;
        }
        ((self.control_rate_hz / self.trajectory_rate_hz).round() as i64).max(1)
    }

    /// Indices into `joint_names` of the arm joints (commanded on `joint_commands`) and
    /// of the gripper joints (on `gripper_commands`), each in `joint_names` order.
    pub fn arm_and_gripper(&self) -> (Vec<usize>, Vec<usize>) {
        (0..self.joint_names.len()).partition(|&i| !self.gripper_joints.contains(&self.joint_names[i]))
    }
}

/// Seconds to nanoseconds.
pub fn secs_to_ns(s: f64) -> i64 {
    (s * 1e9).round() as i64
}

#[cfg(test)]
mod tests {
    use super::yaml::params_from_yaml;
    use super::*;

    fn with(name: &str, v: ParamValue) -> Params {
        let mut p = Params::new();
        p.insert(name.into(), v);
        p
    }

    #[test]
    fn defaults_are_valid_and_round_trip() {
        let (cfg, unknown) = Config::from_params(&Params::new()).unwrap();
        assert_eq!(cfg, Config::default());
        assert!(unknown.is_empty());
        let (again, unknown) = Config::from_params(&cfg.to_params()).unwrap();
        assert_eq!(again, cfg);
        assert!(unknown.is_empty());
        // Every declared parameter is part of to_params, and nothing else.
        let names: Vec<_> = cfg.to_params().into_keys().collect();
        let mut declared: Vec<_> = PARAMETERS.iter().map(|p| p.name.to_string()).collect();
        declared.sort();
        assert_eq!(names, declared);
    }

    #[test]
    fn the_shipped_yaml_documents_every_parameter() {
        let text = include_str!("../../../config/controller.yaml");
        let mut keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with('#'))
            .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k))
            .collect();
        keys.sort();
        let mut declared: Vec<&str> = PARAMETERS.iter().map(|p| p.name).collect();
        declared.sort();
        assert_eq!(keys, declared);
    }

    #[test]
    fn the_shipped_yaml_parses_to_the_defaults() {
        let params = params_from_yaml(include_str!("../../../config/controller.yaml"), "vla_controller").unwrap();
        let (cfg, unknown) = Config::from_params(&params).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn errors_name_parameter_and_value() {
        let e = Config::from_params(&with("control_rate_hz", ParamValue::Double(-5.0)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("control_rate_hz") && e.contains("-5"), "{e}");

        let e = Config::from_params(&with("device", ParamValue::String("tpu".into())))
            .unwrap_err()
            .to_string();
        assert!(e.contains("device") && e.contains("tpu"), "{e}");

        let e = Config::from_params(&with("thread_priority", ParamValue::Integer(100)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("thread_priority") && e.contains("1-99"), "{e}");

        let e = Config::from_params(&with("smoothing", ParamValue::Integer(3)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("smoothing") && e.contains("string"), "{e}");

        let e = Config::from_params(&with(
            "joint_lower_limits",
            ParamValue::DoubleArray(vec![0.0; 3]),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("joint_lower_limits") && e.contains("one value per joint"), "{e}");

        let e = Config::from_params(&with(
            "camera_names",
            ParamValue::StringArray(vec!["main".into(), "main".into()]),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("camera_names") && e.contains("twice"), "{e}");

        let e = Config::from_params(&with("sync_queue_size", ParamValue::Integer(0)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sync_queue_size") && e.contains(">= 1"), "{e}");
    }

    #[test]
    fn rates_are_bounded_so_that_every_period_is_a_usable_duration() {
        for (name, bad) in [("control_rate_hz", 20_000.0), ("diagnostics_rate_hz", 1e-9), ("explain_rate_hz", f64::MAX)] {
            let e = Config::from_params(&with(name, ParamValue::Double(bad))).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("0.001 to 10000 Hz"), "{e}");
        }
        for rate in [0.001, 10_000.0] {
            let (cfg, _) = Config::from_params(&with("control_rate_hz", ParamValue::Double(rate))).unwrap();
            assert!(cfg.control_period_ns() >= 100_000 && cfg.control_period_ns() <= 1_000_000_000_000);
        }
    }

    #[test]
    fn crossed_limits_are_refused() {
        let mut p = with("joint_lower_limits", ParamValue::DoubleArray(vec![0.0; 6]));
        p.insert("joint_upper_limits".into(), ParamValue::DoubleArray(vec![1.0, 1.0, -1.0, 1.0, 1.0, 1.0]));
        let e = Config::from_params(&p).unwrap_err().to_string();
        assert!(e.contains("elbow") && e.contains("lower limit 0"), "{e}");
    }

    #[test]
    fn outputs_and_limits_are_checked_against_the_joints() {
        let e = Config::from_params(&with("gripper_joints", ParamValue::StringArray(vec!["claw".into()]))).unwrap_err().to_string();
        assert!(e.contains("gripper_joints") && e.contains("`claw` is not in joint_names"), "{e}");
        let (cfg, _) = Config::from_params(&with("gripper_joints", ParamValue::StringArray(vec!["gripper".into()]))).unwrap();
        assert_eq!(cfg.arm_and_gripper(), (vec![0, 1, 2, 3, 4], vec![5]));

        // Trajectories: 10 points at 50 Hz cover the 100 ms to the next at 10 Hz, 3 do not.
        let mut p = with("command_type", ParamValue::String("joint_trajectory".into()));
        let (cfg, _) = Config::from_params(&p).unwrap();
        assert_eq!((cfg.plan_len(), cfg.trajectory_every()), (10, 5));
        p.insert("trajectory_horizon".into(), ParamValue::Integer(3));
        let e = Config::from_params(&p).unwrap_err().to_string();
        assert!(e.contains("trajectory_horizon") && e.contains("raise it to 5"), "{e}");
        // One point: every tick, whatever the rate.
        p.insert("trajectory_horizon".into(), ParamValue::Integer(1));
        let (cfg, _) = Config::from_params(&p).unwrap();
        assert_eq!((cfg.plan_len(), cfg.trajectory_every()), (1, 1));
        // A multi-array command is one point per tick.
        assert_eq!((Config::default().plan_len(), Config::default().trajectory_every()), (1, 1));

        // Empty limit lists only with a robot description.
        let mut p = with("joint_lower_limits", ParamValue::DoubleArray(vec![]));
        assert!(Config::from_params(&p).unwrap_err().to_string().contains("one value per joint"));
        p.insert("robot_description_source".into(), ParamValue::String("topic".into()));
        assert!(Config::from_params(&p).is_ok());
        p.insert("robot_description_source".into(), ParamValue::String("parameter".into()));
        let e = Config::from_params(&p).unwrap_err().to_string();
        assert!(e.contains("robot_description") && e.contains("give the URDF"), "{e}");
    }

    #[test]
    fn smoothing_choice_reads_its_own_parameter() {
        let mut p = with("smoothing", ParamValue::String("exponential".into()));
        p.insert("exponential_alpha".into(), ParamValue::Double(0.25));
        let (cfg, _) = Config::from_params(&p).unwrap();
        assert_eq!(cfg.smoothing(), Smoothing::Exponential { alpha: 0.25 });
        p.insert("exponential_alpha".into(), ParamValue::Double(1.5));
        assert!(Config::from_params(&p).is_err());
    }

    #[test]
    fn runtime_changes_are_validated_and_limited_to_runtime_parameters() {
        let cfg = Config::default();
        let c = cfg.with_runtime_change("attention_threshold", &ParamValue::Double(0.5)).unwrap();
        assert_eq!(c.attention_threshold, 0.5);
        let c = cfg.with_runtime_change("explanation_method", &ParamValue::String("policy_attention".into())).unwrap();
        assert_eq!(c.explanation_method, Method::PolicyAttention);
        let c = cfg.with_runtime_change("token_weight_method", &ParamValue::String("occlusion".into())).unwrap();
        assert_eq!(c.token_weight_method, TokenMethod::Occlusion);
        let e = cfg.with_runtime_change("token_weight_method", &ParamValue::String("attention".into())).unwrap_err().to_string();
        assert!(e.contains("auto, occlusion or policy_attention"), "{e}");
        let e = cfg.with_runtime_change("activation_alpha", &ParamValue::Double(1.5)).unwrap_err().to_string();
        assert!(e.contains("activation_alpha") && e.contains("[0, 1]"), "{e}");
        let e = cfg.with_runtime_change("control_rate_hz", &ParamValue::Double(10.0)).unwrap_err().to_string();
        assert!(e.contains("restarts"), "{e}");
    }

    #[test]
    fn unknown_parameters_are_reported_not_fatal() {
        let mut p = with("contrl_rate_hz", ParamValue::Double(10.0));
        p.insert("use_sim_time".into(), ParamValue::Bool(true));
        let (_, unknown) = Config::from_params(&p).unwrap();
        assert_eq!(unknown, vec!["contrl_rate_hz".to_string()]);
    }

    #[test]
    fn integers_are_accepted_for_numbers_and_devices_parse() {
        let (cfg, _) = Config::from_params(&with("control_rate_hz", ParamValue::Integer(100))).unwrap();
        assert_eq!(cfg.control_rate_hz, 100.0);
        assert_eq!(cfg.control_period_ns(), 10_000_000);
        assert_eq!(Device::parse("cuda:1"), Some(Device::Cuda(1)));
        assert_eq!(Device::parse("cuda"), Some(Device::Cuda(0)));
        assert_eq!(Device::parse("cuda:x"), None);
    }

    #[test]
    fn the_table_describes_every_parameter_in_one_line() {
        for p in PARAMETERS {
            assert!(!p.description.is_empty() && !p.description.starts_with(' ') && !p.description.contains('\n'), "{p:?}");
        }
        let runtime: Vec<&str> = PARAMETERS.iter().filter(|p| p.runtime).map(|p| p.name).collect();
        assert_eq!(runtime, ["attention_threshold", "activation_alpha", "explain_rate_hz", "explanation_method", "token_weight_method", "dry_run"]);
        assert_eq!(Config::spec("device").unwrap().ros_type, "string");
        assert_eq!(Config::spec("joint_lower_limits").unwrap().ros_type, "double array");
    }
}
