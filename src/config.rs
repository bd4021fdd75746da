//! The node's configuration: every parameter declared here once, with its type, default
//! and validation. `config/controller.yaml` documents the same parameters for users; the
//! node reads them from the ROS parameter server (which loads that file), and the
//! adapters turn ROS parameter values into [`ParamValue`] so that this module needs no ROS.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::explain::Method;

/// A parameter value as ROS 2 knows it, without the ROS types.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Integer(i64),
    Double(f64),
    String(String),
    BoolArray(Vec<bool>),
    IntegerArray(Vec<i64>),
    DoubleArray(Vec<f64>),
    StringArray(Vec<String>),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Integer(v) => write!(f, "{v}"),
            ParamValue::Double(v) => write!(f, "{v}"),
            ParamValue::String(v) => write!(f, "{v:?}"),
            ParamValue::BoolArray(v) => write!(f, "{v:?}"),
            ParamValue::IntegerArray(v) => write!(f, "{v:?}"),
            ParamValue::DoubleArray(v) => write!(f, "{v:?}"),
            ParamValue::StringArray(v) => write!(f, "{v:?}"),
        }
    }
}

pub type Params = BTreeMap<String, ParamValue>;

/// Where the policy runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    /// `cpu`, `cuda` or `cuda:N`.
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

/// How consecutive action chunks are blended into one command per control tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoothing {
    /// ACT temporal ensembling: every chunk that has an action for this tick contributes,
    /// weighted `exp(-m * i)` with `i = 0` the oldest chunk.
    TemporalEnsemble { m: f64 },
    /// The newest chunk's action, low-passed: `y = alpha * x + (1 - alpha) * y_prev`.
    Exponential { alpha: f64 },
    /// The newest chunk's action as it is.
    None,
}

/// The message type of the command topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandType {
    /// std_msgs/Float64MultiArray: what forward_command_controller takes.
    Float64MultiArray,
    /// trajectory_msgs/JointTrajectory with one point: what joint_trajectory_controller takes.
    JointTrajectory,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// TorchScript policy file; relative paths are taken from the working directory.
    pub policy_path: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: Device,
    /// libtorch intra-op threads; 0 keeps libtorch's default (all cores). One is faster
    /// for small policies.
    pub torch_threads: usize,
    /// SCHED_FIFO priority (1-99) of the threads that receive, infer and command; 0
    /// leaves them at normal priority. Explanations always run at normal priority.
    pub thread_priority: u32,
    /// Camera names; camera `X` is read from `camera/X/image_raw`. Must match the policy.
    pub camera_names: Vec<String>,
    /// Expected camera image size; other sizes are rejected (and counted).
    pub image_width: u32,
    pub image_height: u32,
    /// Joint order of commands; must match the policy. Joint states are matched by name.
    pub joint_names: Vec<String>,
    /// Rate at which commands are published; must match the policy's.
    pub control_rate_hz: f64,
    /// ApproximateTime: messages kept per camera while looking for a set.
    pub sync_queue_size: usize,
    /// ApproximateTime: largest allowed spread of stamps within one set.
    pub sync_max_interval_s: f64,
    /// ApproximateTime: penalty for waiting on newer messages (message_filters' default 0.1).
    pub sync_age_penalty: f64,
    /// ApproximateTime: least time between two frames of one camera (message_filters'
    /// inter-message lower bound). With it a complete set goes out at once instead of
    /// after every camera's next frame.
    pub sync_inter_message_lower_bound_s: f64,
    /// A set is paired with the joint state nearest its stamp, if one lies within this.
    pub joint_state_tolerance_s: f64,
    /// A camera with no message for this long makes the node hold position.
    pub camera_timeout_s: f64,
    /// No joint state for this long makes the node hold position.
    pub joint_state_timeout_s: f64,
    pub smoothing: Smoothing,
    pub joint_lower_limits: Vec<f64>,
    pub joint_upper_limits: Vec<f64>,
    /// Largest change of each joint's command per control tick.
    pub max_step_per_tick: Vec<f64>,
    pub command_type: CommandType,
    /// Rate of /diagnostics.
    pub diagnostics_rate_hz: f64,
    /// Explanations: tokens whose weight relative to the largest is under this are drawn
    /// neutral in the language heatmap. Changeable at run time.
    pub attention_threshold: f64,
    /// Explanations: weight of the colour map over the camera image. Changeable at run time.
    pub activation_alpha: f64,
    /// Explanations: at most this many per second, newest inference first. Changeable at
    /// run time.
    pub explain_rate_hz: f64,
    /// Explanations: where the patch grids come from. Changeable at run time.
    pub explanation_method: Method,
    /// Occluded copies per forward pass in occlusion attribution.
    pub occlusion_batch: usize,
    /// Compute everything and publish explanations and predicted motion, but no
    /// commands: for the first runs on a real robot.
    pub dry_run: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            policy_path: PathBuf::from("policy/demo_policy.pt"),
            device: Device::Cpu,
            torch_threads: 1,
            thread_priority: 50,
            camera_names: ["main", "side", "top"].map(String::from).to_vec(),
            image_width: 640,
            image_height: 480,
            joint_names: [
                "shoulder_pan",
                "shoulder_lift",
                "elbow",
                "wrist_pitch",
                "wrist_roll",
                "gripper",
            ]
            .map(String::from)
            .to_vec(),
            control_rate_hz: 50.0,
            sync_queue_size: 10,
            sync_max_interval_s: 0.02,
            sync_age_penalty: 0.1,
            sync_inter_message_lower_bound_s: 0.015,
            joint_state_tolerance_s: 0.05,
            camera_timeout_s: 0.5,
            joint_state_timeout_s: 0.25,
            smoothing: Smoothing::TemporalEnsemble { m: 0.05 },
            joint_lower_limits: vec![-1.6, 0.0, -3.1, -2.4, -1.0, 0.0],
            joint_upper_limits: vec![1.6, 2.6, 0.0, 0.4, 1.0, 0.06],
            max_step_per_tick: vec![0.05, 0.05, 0.05, 0.05, 0.05, 0.01],
            command_type: CommandType::Float64MultiArray,
            diagnostics_rate_hz: 1.0,
            attention_threshold: 0.3,
            activation_alpha: 0.4,
            explain_rate_hz: 5.0,
            explanation_method: Method::Occlusion,
            occlusion_batch: 16,
            dry_run: false,
        }
    }
}

/// Every parameter the node declares, with a one-line description (shown by
/// `ros2 param describe` and checked against `config/controller.yaml` by a test).
pub const PARAMETERS: &[(&str, &str)] = &[
    ("policy_path", "TorchScript policy file"),
    ("device", "cpu, cuda or cuda:N"),
    ("torch_threads", "libtorch intra-op threads, 0 for libtorch's default"),
    ("thread_priority", "real-time (SCHED_FIFO) priority of the receive, inference and control threads, 0 for none"),
    ("camera_names", "cameras, read from camera/<name>/image_raw, in the policy's order"),
    ("image_width", "expected camera image width in pixels"),
    ("image_height", "expected camera image height in pixels"),
    ("joint_names", "joint order of commands, as the policy orders them"),
    ("control_rate_hz", "command rate, must equal the policy's"),
    ("sync_queue_size", "ApproximateTime queue size per camera"),
    ("sync_max_interval_s", "largest stamp spread within a camera set"),
    ("sync_age_penalty", "ApproximateTime age penalty"),
    ("sync_inter_message_lower_bound_s", "least time between two frames of one camera"),
    ("joint_state_tolerance_s", "largest stamp distance between a camera set and its joint state"),
    ("camera_timeout_s", "hold position when a camera is silent this long"),
    ("joint_state_timeout_s", "hold position when joint_states is silent this long"),
    ("smoothing", "temporal_ensemble, exponential or none"),
    ("ensemble_m", "temporal ensembling weight exp(-m*i), i = 0 the oldest chunk"),
    ("exponential_alpha", "exponential filter weight of the new action"),
    ("joint_lower_limits", "lower position limit per joint"),
    ("joint_upper_limits", "upper position limit per joint"),
    ("max_step_per_tick", "largest command change per joint per control tick"),
    ("command_type", "float64_multi_array or joint_trajectory"),
    ("diagnostics_rate_hz", "rate of /diagnostics"),
    ("attention_threshold", "heatmap: weights under this fraction of the largest are drawn neutral"),
    ("activation_alpha", "overlay: weight of the colour map over the camera image"),
    ("explain_rate_hz", "explanations per second at most, newest inference first"),
    ("explanation_method", "occlusion or policy_attention"),
    ("occlusion_batch", "occluded copies per forward pass"),
    ("dry_run", "publish explanations and predicted motion but no commands"),
];

/// Parameters that take effect while the node runs (the others on restart).
pub const RUNTIME_PARAMETERS: &[&str] =
    &["attention_threshold", "activation_alpha", "explain_rate_hz", "explanation_method"];

/// Parameters every ROS node has; accepted without being ours.
const ROS_PARAMETERS: &[&str] = &["use_sim_time", "start_type_description_service"];

struct Reader<'a> {
    params: &'a Params,
}

impl Reader<'_> {
    fn get(&self, name: &str) -> Option<&ParamValue> {
        debug_assert!(PARAMETERS.iter().any(|(n, _)| *n == name), "undeclared {name}");
        self.params.get(name)
    }

    fn type_error(name: &str, v: &ParamValue, expected: &str) -> Error {
        Error::param(name, v, format!("expected {expected}"))
    }

    fn f64(&self, name: &str, default: f64) -> Result<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(ParamValue::Double(v)) => Ok(*v),
            Some(ParamValue::Integer(v)) => Ok(*v as f64),
            Some(v) => Err(Self::type_error(name, v, "a number")),
        }
    }

    fn positive(&self, name: &str, default: f64) -> Result<f64> {
        let v = self.f64(name, default)?;
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            Err(Error::param(name, v, "must be a finite number > 0"))
        }
    }

    fn bool(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(ParamValue::Bool(v)) => Ok(*v),
            Some(v) => Err(Self::type_error(name, v, "true or false")),
        }
    }

    fn unit(&self, name: &str, default: f64) -> Result<f64> {
        let v = self.f64(name, default)?;
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(Error::param(name, v, "must be in [0, 1]"))
        }
    }

    fn count(&self, name: &str, default: usize, min: usize) -> Result<usize> {
        let v = match self.get(name) {
            None => return Ok(default),
            Some(ParamValue::Integer(v)) => *v,
            Some(v) => return Err(Self::type_error(name, v, "an integer")),
        };
        usize::try_from(v)
            .ok()
            .filter(|v| *v >= min)
            .ok_or_else(|| Error::param(name, v, format!("must be an integer >= {min}")))
    }

    fn string(&self, name: &str, default: &str) -> Result<String> {
        match self.get(name) {
            None => Ok(default.to_owned()),
            Some(ParamValue::String(v)) => Ok(v.clone()),
            Some(v) => Err(Self::type_error(name, v, "a string")),
        }
    }

    fn strings(&self, name: &str, default: &[String]) -> Result<Vec<String>> {
        let v = match self.get(name) {
            None => default.to_vec(),
            Some(ParamValue::StringArray(v)) => v.clone(),
            Some(v) => return Err(Self::type_error(name, v, "a list of strings")),
        };
        if v.is_empty() {
            return Err(Error::param(name, "[]", "must not be empty"));
        }
        if let Some(dup) = v.iter().enumerate().find(|(i, s)| v[..*i].contains(s)) {
            return Err(Error::param(name, format!("{v:?}"), format!("`{}` appears twice", dup.1)));
        }
        Ok(v)
    }

    fn floats(&self, name: &str, default: &[f64], len: usize) -> Result<Vec<f64>> {
        let v = match self.get(name) {
            None => default.to_vec(),
            Some(ParamValue::DoubleArray(v)) => v.clone(),
            Some(ParamValue::IntegerArray(v)) => v.iter().map(|x| *x as f64).collect(),
            Some(v) => return Err(Self::type_error(name, v, "a list of numbers")),
        };
        if v.len() != len {
            return Err(Error::param(
                name,
                format!("{v:?}"),
                format!("needs one value per joint ({len} joints in joint_names)"),
            ));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(Error::param(name, format!("{v:?}"), "values must be finite"));
        }
        Ok(v)
    }
}

impl Config {
    /// Reads and validates the configuration. Missing parameters take their defaults;
    /// every error names the parameter and the value. Returns the names of parameters
    /// that were set but are not ours (most likely typos), for the caller to warn about.
    pub fn from_params(params: &Params) -> Result<(Config, Vec<String>)> {
        let d = Config::default();
        let r = Reader { params };

        let device_s = r.string("device", &d.device.to_string())?;
        let device = Device::parse(&device_s)
            .ok_or_else(|| Error::param("device", &device_s, "expected cpu, cuda or cuda:N"))?;

        let joint_names = r.strings("joint_names", &d.joint_names)?;
        let n = joint_names.len();
        let smoothing_s = r.string("smoothing", "temporal_ensemble")?;
        let smoothing = match smoothing_s.as_str() {
            "temporal_ensemble" => {
                let m = r.f64("ensemble_m", 0.05)?;
                if !(m.is_finite() && m >= 0.0) {
                    return Err(Error::param("ensemble_m", m, "must be a finite number >= 0"));
                }
                Smoothing::TemporalEnsemble { m }
            }
            "exponential" => {
                let alpha = r.f64("exponential_alpha", 0.5)?;
                if !(alpha > 0.0 && alpha <= 1.0) {
                    return Err(Error::param("exponential_alpha", alpha, "must be in (0, 1]"));
                }
                Smoothing::Exponential { alpha }
            }
            "none" => Smoothing::None,
            other => {
                return Err(Error::param(
                    "smoothing",
                    other,
                    "expected temporal_ensemble, exponential or none",
                ))
            }
        };
        let command_type = match r.string("command_type", "float64_multi_array")?.as_str() {
            "float64_multi_array" => CommandType::Float64MultiArray,
            "joint_trajectory" => CommandType::JointTrajectory,
            other => {
                return Err(Error::param(
                    "command_type",
                    other,
                    "expected float64_multi_array or joint_trajectory",
                ))
            }
        };

        let cfg = Config {
            policy_path: PathBuf::from(r.string("policy_path", &d.policy_path.to_string_lossy())?),
            device,
            torch_threads: r.count("torch_threads", d.torch_threads, 0)?,
            thread_priority: match r.count("thread_priority", d.thread_priority as usize, 0)? {
                p @ 0..=99 => p as u32,
                p => return Err(Error::param("thread_priority", p, "must be 0 (none) or a priority of 1-99")),
            },
            camera_names: r.strings("camera_names", &d.camera_names)?,
            image_width: r.count("image_width", d.image_width as usize, 1)? as u32,
            image_height: r.count("image_height", d.image_height as usize, 1)? as u32,
            joint_lower_limits: r.floats("joint_lower_limits", &d.joint_lower_limits, n)?,
            joint_upper_limits: r.floats("joint_upper_limits", &d.joint_upper_limits, n)?,
            max_step_per_tick: r.floats("max_step_per_tick", &d.max_step_per_tick, n)?,
            joint_names,
            control_rate_hz: r.positive("control_rate_hz", d.control_rate_hz)?,
            sync_queue_size: r.count("sync_queue_size", d.sync_queue_size, 1)?,
            sync_max_interval_s: r.positive("sync_max_interval_s", d.sync_max_interval_s)?,
            sync_age_penalty: {
                let v = r.f64("sync_age_penalty", d.sync_age_penalty)?;
                if !(v.is_finite() && v >= 0.0) {
                    return Err(Error::param("sync_age_penalty", v, "must be a finite number >= 0"));
                }
                v
            },
            sync_inter_message_lower_bound_s: {
                let v = r.f64("sync_inter_message_lower_bound_s", d.sync_inter_message_lower_bound_s)?;
                if !(v.is_finite() && v >= 0.0) {
                    return Err(Error::param("sync_inter_message_lower_bound_s", v, "must be a finite number >= 0"));
                }
                v
            },
            joint_state_tolerance_s: r.positive("joint_state_tolerance_s", d.joint_state_tolerance_s)?,
            camera_timeout_s: r.positive("camera_timeout_s", d.camera_timeout_s)?,
            joint_state_timeout_s: r.positive("joint_state_timeout_s", d.joint_state_timeout_s)?,
            smoothing,
            command_type,
            diagnostics_rate_hz: r.positive("diagnostics_rate_hz", d.diagnostics_rate_hz)?,
            attention_threshold: r.unit("attention_threshold", d.attention_threshold)?,
            activation_alpha: r.unit("activation_alpha", d.activation_alpha)?,
            explain_rate_hz: r.positive("explain_rate_hz", d.explain_rate_hz)?,
            explanation_method: {
                let m = r.string("explanation_method", &d.explanation_method.to_string())?;
                Method::parse(&m)
                    .ok_or_else(|| Error::param("explanation_method", &m, "expected occlusion or policy_attention"))?
            },
            occlusion_batch: r.count("occlusion_batch", d.occlusion_batch, 1)?,
            dry_run: r.bool("dry_run", d.dry_run)?,
        };
        cfg.validate()?;

        let unknown = params
            .keys()
            .filter(|k| {
                !PARAMETERS.iter().any(|(n, _)| n == k) && !ROS_PARAMETERS.contains(&k.as_str())
            })
            .cloned()
            .collect();
        Ok((cfg, unknown))
    }

    /// Checks between fields.
    pub fn validate(&self) -> Result<()> {
        for (i, name) in self.joint_names.iter().enumerate() {
            let (lo, hi) = (self.joint_lower_limits[i], self.joint_upper_limits[i]);
            if lo >= hi {
                return Err(Error::param(
                    "joint_lower_limits",
                    format!("{:?}", self.joint_lower_limits),
                    format!("joint `{name}`: lower limit {lo} is not below upper limit {hi}"),
                ));
            }
            if self.max_step_per_tick[i] <= 0.0 {
                return Err(Error::param(
                    "max_step_per_tick",
                    format!("{:?}", self.max_step_per_tick),
                    format!("joint `{name}`: must be > 0"),
                ));
            }
        }
        Ok(())
    }

    /// The parameters of this configuration as ROS values, to declare them on the node so
    /// that `ros2 param get` shows what is in effect, defaults included.
    pub fn to_params(&self) -> Params {
        let s = |v: &str| ParamValue::String(v.to_owned());
        let mut p = Params::new();
        p.insert("policy_path".into(), s(&self.policy_path.to_string_lossy()));
        p.insert("device".into(), s(&self.device.to_string()));
        p.insert("torch_threads".into(), ParamValue::Integer(self.torch_threads as i64));
        p.insert("thread_priority".into(), ParamValue::Integer(self.thread_priority.into()));
        p.insert("camera_names".into(), ParamValue::StringArray(self.camera_names.clone()));
        p.insert("image_width".into(), ParamValue::Integer(self.image_width.into()));
        p.insert("image_height".into(), ParamValue::Integer(self.image_height.into()));
        p.insert("joint_names".into(), ParamValue::StringArray(self.joint_names.clone()));
        p.insert("control_rate_hz".into(), ParamValue::Double(self.control_rate_hz));
        p.insert("sync_queue_size".into(), ParamValue::Integer(self.sync_queue_size as i64));
        p.insert("sync_max_interval_s".into(), ParamValue::Double(self.sync_max_interval_s));
        p.insert("sync_age_penalty".into(), ParamValue::Double(self.sync_age_penalty));
        p.insert("sync_inter_message_lower_bound_s".into(), ParamValue::Double(self.sync_inter_message_lower_bound_s));
        p.insert("joint_state_tolerance_s".into(), ParamValue::Double(self.joint_state_tolerance_s));
        p.insert("camera_timeout_s".into(), ParamValue::Double(self.camera_timeout_s));
        p.insert("joint_state_timeout_s".into(), ParamValue::Double(self.joint_state_timeout_s));
        let (smoothing, m, alpha) = match self.smoothing {
            Smoothing::TemporalEnsemble { m } => ("temporal_ensemble", m, 0.5),
            Smoothing::Exponential { alpha } => ("exponential", 0.05, alpha),
            Smoothing::None => ("none", 0.05, 0.5),
        };
        p.insert("smoothing".into(), s(smoothing));
        p.insert("ensemble_m".into(), ParamValue::Double(m));
        p.insert("exponential_alpha".into(), ParamValue::Double(alpha));
        p.insert("joint_lower_limits".into(), ParamValue::DoubleArray(self.joint_lower_limits.clone()));
        p.insert("joint_upper_limits".into(), ParamValue::DoubleArray(self.joint_upper_limits.clone()));
        p.insert("max_step_per_tick".into(), ParamValue::DoubleArray(self.max_step_per_tick.clone()));
        p.insert(
            "command_type".into(),
            s(match self.command_type {
                CommandType::Float64MultiArray => "float64_multi_array",
                CommandType::JointTrajectory => "joint_trajectory",
            }),
        );
        p.insert("diagnostics_rate_hz".into(), ParamValue::Double(self.diagnostics_rate_hz));
        p.insert("attention_threshold".into(), ParamValue::Double(self.attention_threshold));
        p.insert("activation_alpha".into(), ParamValue::Double(self.activation_alpha));
        p.insert("explain_rate_hz".into(), ParamValue::Double(self.explain_rate_hz));
        p.insert("explanation_method".into(), s(&self.explanation_method.to_string()));
        p.insert("occlusion_batch".into(), ParamValue::Integer(self.occlusion_batch as i64));
        p.insert("dry_run".into(), ParamValue::Bool(self.dry_run));
        p
    }

    /// Applies a run-time change of one of [`RUNTIME_PARAMETERS`], validated as at start-up.
    pub fn with_runtime_change(&self, name: &str, value: &ParamValue) -> Result<Config> {
        if !RUNTIME_PARAMETERS.contains(&name) {
            return Err(Error::param(name, value, "takes effect only when the node restarts"));
        }
        let mut p = self.to_params();
        p.insert(name.to_owned(), value.clone());
        Ok(Config::from_params(&p)?.0)
    }

    /// Control period in nanoseconds.
    pub fn control_period_ns(&self) -> i64 {
        (1e9 / self.control_rate_hz).round() as i64
    }
}

/// The parameters a ROS parameters file gives the node `node_name`: the entries under
/// `/**`, `**`, `node_name` and `/node_name` (in that order, later ones winning), as rcl
/// reads them. For the commands that run without ROS (the bag replay).
pub fn params_from_yaml(text: &str, node_name: &str) -> std::result::Result<Params, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut out = Params::new();
    for key in ["/**".to_owned(), "**".to_owned(), node_name.to_owned(), format!("/{node_name}")] {
        let Some(params) = doc.get(key.as_str()).and_then(|n| n.get("ros__parameters")) else { continue };
        let map = params.as_mapping().ok_or_else(|| format!("{key}.ros__parameters is not a mapping"))?;
        for (k, v) in map {
            let name = k.as_str().ok_or_else(|| format!("parameter name {k:?} is not a string"))?;
            out.insert(name.to_owned(), yaml_value(v).map_err(|e| format!("parameter `{name}`: {e}"))?);
        }
    }
    Ok(out)
}

/// One `name:=value` override, the value read as YAML (as `-p name:=value` does).
pub fn param_override(arg: &str) -> std::result::Result<(String, ParamValue), String> {
    let (name, value) = arg.split_once(":=").ok_or_else(|| format!("`{arg}`: expected name:=value"))?;
    let v: serde_yaml::Value = serde_yaml::from_str(value).map_err(|e| format!("`{arg}`: {e}"))?;
    Ok((name.to_owned(), yaml_value(&v).map_err(|e| format!("`{arg}`: {e}"))?))
}

fn yaml_value(v: &serde_yaml::Value) -> std::result::Result<ParamValue, String> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Bool(b) => ParamValue::Bool(*b),
        Y::Number(n) if n.is_i64() => ParamValue::Integer(n.as_i64().expect("checked")),
        Y::Number(n) => ParamValue::Double(n.as_f64().ok_or("number out of range")?),
        Y::String(s) => ParamValue::String(s.clone()),
        Y::Sequence(items) => {
            let all = |f: fn(&Y) -> bool| items.iter().all(f);
            if items.is_empty() || all(|i| i.is_string()) {
                ParamValue::StringArray(items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect())
            } else if all(|i| i.is_bool()) {
                ParamValue::BoolArray(items.iter().map(|i| i.as_bool().expect("checked")).collect())
            } else if all(|i| i.is_i64()) {
                ParamValue::IntegerArray(items.iter().map(|i| i.as_i64().expect("checked")).collect())
            } else if all(|i| i.is_number()) {
                ParamValue::DoubleArray(items.iter().map(|i| i.as_f64().expect("checked")).collect())
            } else {
                return Err("a list must hold values of one type".into());
            }
        }
        other => return Err(format!("unsupported value {other:?}")),
    })
}

/// Seconds to nanoseconds.
pub fn secs_to_ns(s: f64) -> i64 {
    (s * 1e9).round() as i64
}

#[cfg(test)]
mod tests {
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
        let mut declared: Vec<_> = PARAMETERS.iter().map(|(n, _)| n.to_string()).collect();
        declared.sort();
        assert_eq!(names, declared);
    }

    #[test]
    fn the_shipped_yaml_documents_every_parameter() {
        let text = include_str!("../config/controller.yaml");
        let mut keys: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with('#'))
            .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k))
            .collect();
        keys.sort();
        let mut declared: Vec<&str> = PARAMETERS.iter().map(|(n, _)| *n).collect();
        declared.sort();
        assert_eq!(keys, declared);
    }

    #[test]
    fn the_shipped_yaml_parses_to_the_defaults() {
        let params = params_from_yaml(include_str!("../config/controller.yaml"), "vla_controller").unwrap();
        let (cfg, unknown) = Config::from_params(&params).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn yaml_node_sections_and_overrides() {
        let text = "/**:\n  ros__parameters:\n    control_rate_hz: 10\n    camera_names: [a, b]\n\
                    vla_controller:\n  ros__parameters:\n    control_rate_hz: 20.0\n\
                    other:\n  ros__parameters:\n    control_rate_hz: 30.0\n";
        let p = params_from_yaml(text, "vla_controller").unwrap();
        assert_eq!(p["control_rate_hz"], ParamValue::Double(20.0));
        assert_eq!(p["camera_names"], ParamValue::StringArray(vec!["a".into(), "b".into()]));
        assert_eq!(param_override("joint_lower_limits:=[0, 1.5]").unwrap().1, ParamValue::DoubleArray(vec![0.0, 1.5]));
        assert_eq!(param_override("device:=cuda").unwrap().1, ParamValue::String("cuda".into()));
        assert!(param_override("device=cuda").is_err());
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
    fn crossed_limits_are_refused() {
        let mut p = with("joint_lower_limits", ParamValue::DoubleArray(vec![0.0; 6]));
        p.insert("joint_upper_limits".into(), ParamValue::DoubleArray(vec![1.0, 1.0, -1.0, 1.0, 1.0, 1.0]));
        let e = Config::from_params(&p).unwrap_err().to_string();
        assert!(e.contains("elbow") && e.contains("lower limit 0"), "{e}");
    }

    #[test]
    fn smoothing_choice_reads_its_own_parameter() {
        let mut p = with("smoothing", ParamValue::String("exponential".into()));
        p.insert("exponential_alpha".into(), ParamValue::Double(0.25));
        let (cfg, _) = Config::from_params(&p).unwrap();
        assert_eq!(cfg.smoothing, Smoothing::Exponential { alpha: 0.25 });
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
}
