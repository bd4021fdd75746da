//! The policy contract (docs/POLICY_CONTRACT.md) as the node reads it: a policy's
//! metadata (version 1 or 2, both read into one [`PolicyMeta`]), and every way in which
//! it can disagree with the contract or with the node's configuration.

use serde::Deserialize;

use crate::core::config::{Config, Method, SmoothingKind, TokenMethod};
use crate::core::inputs::tokenizer::{CharSpec, TokenizerSpec};
use crate::core::joint_map::JointMap;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Normalization {
    pub state_mean: Vec<f64>,
    pub state_std: Vec<f64>,
    pub action_mean: Vec<f64>,
    pub action_std: Vec<f64>,
}

impl Normalization {
    /// No normalization: for policies that normalize inside the module.
    pub fn identity(state: usize, action: usize) -> Self {
        Normalization {
            state_mean: vec![0.0; state],
            state_std: vec![1.0; state],
            action_mean: vec![0.0; action],
            action_std: vec![1.0; action],
        }
    }
}

/// How a camera image becomes the policy's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// The mean over the source area of each output pixel.
    Area,
    /// Bilinear interpolation with half-pixel centres (no antialiasing).
    Bilinear,
    /// Bilinear keeping the aspect ratio, padded with black on the left and top.
    Letterbox,
}

fn area() -> ResizeMode {
    ResizeMode::Area
}

/// One camera of the policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CameraSpec {
    pub name: String,
    /// The size the policy takes.
    pub width: usize,
    pub height: usize,
    #[serde(default = "area")]
    pub resize: ResizeMode,
    /// The camera size the policy expects; other sizes are rejected. None: any size.
    #[serde(default)]
    pub expected_width: Option<u32>,
    #[serde(default)]
    pub expected_height: Option<u32>,
}

impl CameraSpec {
    /// Bytes of one image at the policy's size.
    pub fn input_len(&self) -> usize {
        self.width * self.height * 3
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionMode {
    /// Actions are joint positions.
    Absolute,
    /// Actions are added to the state the chunk was computed from.
    Delta,
}

/// Where flow-matching noise sits on the time axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowTime {
    /// pi0, SmolVLA, LeRobot: `x_1` is noise, integrate from t = 1 to 0.
    NoiseAtOne,
    /// Rectified flow: `x_0` is noise, integrate from t = 0 to 1.
    NoiseAtZero,
}

/// Whether gradients flow through `velocity` to `x_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Guidance {
    Autograd,
    #[default]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct FlowSpec {
    pub num_steps: usize,
    pub time: FlowTime,
    #[serde(default)]
    pub guidance: Guidance,
    /// The width of `x_t` when the action expert works on actions padded to a fixed
    /// width (pi0 and SmolVLA pad to 32): the chunk is the first `action_names` columns.
    #[serde(default)]
    pub padded_action_dim: Option<usize>,
}

impl FlowSpec {
    /// The width of `x_t` for `actions` actions.
    pub fn width(&self, actions: usize) -> usize {
        self.padded_action_dim.unwrap_or(actions)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// One `forward` gives the chunk.
    Chunk,
    /// The node integrates `velocity` from noise.
    Flow(FlowSpec),
}

/// The optional outputs a policy returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outputs {
    pub token_weights: bool,
    pub patch_maps: bool,
}

/// The grid of the explanations when the policy names none (16 x 12 patches).
pub const PATCH_GRID: [usize; 2] = [12, 16];

fn patch_grid() -> [usize; 2] {
    PATCH_GRID
}

/// The policy's own description, read from its `metadata()` method.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyMeta {
    pub contract_version: u32,
    pub name: String,
    pub kind: PolicyKind,
    pub cameras: Vec<CameraSpec>,
    pub state_names: Vec<String>,
    pub action_names: Vec<String>,
    pub action_mode: ActionMode,
    pub chunk_length: usize,
    pub control_rate_hz: f64,
    /// None: the policy takes no instruction.
    pub tokenizer: Option<TokenizerSpec>,
    pub outputs: Outputs,
    /// Rows and columns of `patch_maps` and of occlusion explanations.
    pub patch_grid: [usize; 2],
    pub normalization: Normalization,
}

/// Version 1, as the first demo policy writes it.
#[derive(Deserialize)]
struct MetaV1 {
    name: String,
    camera_names: Vec<String>,
    image_height: usize,
    image_width: usize,
    patch_grid: [usize; 2],
    joint_names: Vec<String>,
    action_dim: usize,
    chunk_length: usize,
    control_rate_hz: f64,
    tokenizer: CharSpec,
    normalization: Normalization,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum KindName {
    Chunk,
    Flow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetaV2 {
    #[allow(dead_code)] // read to tell the versions apart
    contract_version: u32,
    name: String,
    kind: KindName,
    cameras: Vec<CameraSpec>,
    state_names: Vec<String>,
    action_names: Vec<String>,
    action_mode: ActionMode,
    chunk_length: usize,
    control_rate_hz: f64,
    tokenizer: Option<TokenizerSpec>,
    #[serde(default)]
    outputs: Vec<String>,
    #[serde(default = "patch_grid")]
    patch_grid: [usize; 2],
    normalization: Normalization,
    #[serde(default)]
    flow: Option<FlowSpec>,
}

impl PolicyMeta {
    /// Reads the metadata JSON of a version 1 or 2 policy.
    pub fn parse(json: &str) -> Result<PolicyMeta, String> {
        #[derive(Deserialize)]
        struct Version {
            contract_version: u32,
        }
        let v: Version = serde_json::from_str(json).map_err(|e| format!("metadata is not valid contract JSON: {e}"))?;
        let invalid = |e: serde_json::Error| format!("metadata is not valid contract {} JSON: {e}", v.contract_version);
        match v.contract_version {
            1 => serde_json::from_str::<MetaV1>(json).map_err(invalid)?.try_into(),
            2 => serde_json::from_str::<MetaV2>(json).map_err(invalid)?.try_into(),
            n => Err(format!("contract_version is {n}, this node speaks 1 and 2")),
        }
    }

    pub fn camera_names(&self) -> Vec<String> {
        self.cameras.iter().map(|c| c.name.clone()).collect()
    }

    /// Bytes of one observation's images: every camera at its input size.
    pub fn image_len(&self) -> usize {
        self.cameras.iter().map(CameraSpec::input_len).sum()
    }

    /// `cfg` with the cameras, joints and rate this policy was made for: what a command
    /// that adapts to the policy (inspect) runs with.
    pub fn fitted(&self, cfg: &Config) -> Config {
        let n = self.action_names.len();
        let widen = |v: &[f64], fill: f64| (0..n).map(|i| v.get(i).copied().unwrap_or(fill)).collect();
        Config {
            camera_names: self.camera_names(),
            joint_names: self.action_names.clone(),
            joint_name_map: Vec::new(),
            control_rate_hz: self.control_rate_hz,
            joint_lower_limits: widen(&cfg.joint_lower_limits, f64::MIN),
            joint_upper_limits: widen(&cfg.joint_upper_limits, f64::MAX),
            max_step_per_tick: widen(&cfg.max_step_per_tick, f64::MAX),
            ..cfg.clone()
        }
    }

    /// Every way in which this metadata disagrees with the contract or with `cfg`
    /// (through its joint map), including what an explanation of `cfg`'s kind needs.
    pub fn differences(&self, cfg: &Config) -> Vec<String> {
        let mut d = self.contract_differences();
        if self.camera_names() != cfg.camera_names {
            d.push(format!("cameras: policy {:?}, parameter camera_names {:?}", self.camera_names(), cfg.camera_names));
        }
        if let Err(e) = JointMap::new(cfg, self) {
            d.extend(e);
        }
        if (self.control_rate_hz - cfg.control_rate_hz).abs() > 1e-9 {
            d.push(format!(
                "control rate: policy {} Hz, parameter control_rate_hz {} Hz",
                self.control_rate_hz, cfg.control_rate_hz
            ));
        }
        if let Err(e) = self.explainable(cfg.explanation_method, cfg.token_weight_method) {
            d.push(e);
        }
        if cfg.smoothing == SmoothingKind::Rtc && !matches!(self.kind, PolicyKind::Flow(_)) {
            d.push("smoothing rtc (real-time chunking) needs a flow-matching policy (kind flow)".into());
        }
        d
    }

    /// Whether explanations by `method` (patch grids) and `tokens` (token weights) can be
    /// made of this policy.
    pub fn explainable(&self, method: Method, tokens: TokenMethod) -> Result<(), String> {
        if method == Method::PolicyAttention && !self.outputs.patch_maps {
            return Err("explanation_method policy_attention needs the policy's patch_maps, which it does not return (use occlusion)".into());
        }
        if tokens == TokenMethod::PolicyAttention && !self.outputs.token_weights {
            return Err("token_weight_method policy_attention needs the policy's token_weights, which it does not return (use auto or occlusion)".into());
        }
        Ok(())
    }

    /// The contract's own rules, whatever the configuration.
    fn contract_differences(&self) -> Vec<String> {
        let mut d = Vec::new();
        if self.cameras.is_empty() {
            d.push("no cameras".into());
        }
        let [rows, cols] = self.patch_grid;
        for c in &self.cameras {
            if c.width == 0 || c.height == 0 {
                d.push(format!("camera `{}`: input size {}x{}", c.name, c.width, c.height));
            }
            if rows == 0 || cols == 0 || rows > c.height || cols > c.width {
                d.push(format!("patch_grid {rows}x{cols} does not fit camera `{}`'s {}x{} input", c.name, c.width, c.height));
            }
            if c.expected_width.is_some() != c.expected_height.is_some() || c.expected_width == Some(0) || c.expected_height == Some(0) {
                d.push(format!("camera `{}`: expected_width and expected_height go together and are > 0", c.name));
            }
        }
        if let Some(dup) = self.cameras.iter().enumerate().find(|(i, c)| self.cameras[..*i].iter().any(|o| o.name == c.name)) {
            d.push(format!("camera `{}` appears twice", dup.1.name));
        }
        if self.chunk_length == 0 {
            d.push("chunk_length is 0".into());
        }
        if self.action_names.is_empty() {
            d.push("no action_names".into());
        }
        if self.action_mode == ActionMode::Delta {
            for a in self.action_names.iter().filter(|a| !self.state_names.contains(a)) {
                d.push(format!("action_mode delta: action `{a}` has no state of the same name to add to"));
            }
        }
        if let PolicyKind::Flow(f) = self.kind {
            if f.num_steps == 0 {
                d.push("flow.num_steps is 0".into());
            }
            if f.width(self.action_names.len()) < self.action_names.len() {
                d.push(format!("flow.padded_action_dim {} is below the {} actions", f.width(0), self.action_names.len()));
            }
        }
        if self.tokenizer.as_ref().is_some_and(|t| t.max_length() == 0) {
            d.push("tokenizer max_length is 0".into());
        }
        let n = &self.normalization;
        for (name, v, len, of) in [
            ("state_mean", &n.state_mean, self.state_names.len(), "state_names"),
            ("state_std", &n.state_std, self.state_names.len(), "state_names"),
            ("action_mean", &n.action_mean, self.action_names.len(), "action_names"),
            ("action_std", &n.action_std, self.action_names.len(), "action_names"),
        ] {
            if v.len() != len {
                d.push(format!("normalization.{name} has {} values, {of} has {len}", v.len()));
            }
            if v.iter().any(|x| !x.is_finite()) || (name.ends_with("std") && v.iter().any(|x| *x <= 0.0)) {
                d.push(format!("normalization.{name} holds invalid values {v:?}"));
            }
        }
        d
    }
}

impl TryFrom<MetaV1> for PolicyMeta {
    type Error = String;

    /// Version 1: every camera at one size, resized by area from the size the node's
    /// `image_width` x `image_height` expects; state and action are the joints.
    fn try_from(m: MetaV1) -> Result<Self, String> {
        if m.action_dim != m.joint_names.len() {
            return Err(format!("action_dim {} differs from the policy's {} joint names", m.action_dim, m.joint_names.len()));
        }
        let cameras = m
            .camera_names
            .into_iter()
            .map(|name| CameraSpec {
                name,
                width: m.image_width,
                height: m.image_height,
                resize: ResizeMode::Area,
                expected_width: None,
                expected_height: None,
            })
            .collect();
        let joints = m.joint_names;
        Ok(PolicyMeta {
            contract_version: 1,
            name: m.name,
            kind: PolicyKind::Chunk,
            cameras,
            state_names: joints.clone(),
            action_names: joints,
            action_mode: ActionMode::Absolute,
            chunk_length: m.chunk_length,
            control_rate_hz: m.control_rate_hz,
            tokenizer: Some(TokenizerSpec::Char(m.tokenizer)),
            outputs: Outputs { token_weights: true, patch_maps: true },
            patch_grid: m.patch_grid,
            normalization: m.normalization,
        })
    }
}

impl TryFrom<MetaV2> for PolicyMeta {
    type Error = String;

    fn try_from(m: MetaV2) -> Result<Self, String> {
        let kind = match (m.kind, m.flow) {
            (KindName::Chunk, None) => PolicyKind::Chunk,
            (KindName::Flow, Some(f)) => PolicyKind::Flow(f),
            (KindName::Chunk, Some(_)) => return Err("kind chunk takes no `flow` object".into()),
            (KindName::Flow, None) => return Err("kind flow needs a `flow` object (num_steps, time)".into()),
        };
        let mut outputs = Outputs::default();
        for o in &m.outputs {
            match o.as_str() {
                "token_weights" => outputs.token_weights = true,
                "patch_maps" => outputs.patch_maps = true,
                other => return Err(format!("unknown output `{other}` (token_weights, patch_maps)")),
            }
        }
        if outputs.token_weights && m.tokenizer.is_none() {
            return Err("token_weights without a tokenizer".into());
        }
        Ok(PolicyMeta {
            contract_version: 2,
            name: m.name,
            kind,
            cameras: m.cameras,
            state_names: m.state_names,
            action_names: m.action_names,
            action_mode: m.action_mode,
            chunk_length: m.chunk_length,
            control_rate_hz: m.control_rate_hz,
            tokenizer: m.tokenizer,
            outputs,
            patch_grid: m.patch_grid,
            normalization: m.normalization,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"contract_version": 1, "name": "demo", "camera_names": ["main", "side"], "image_height": 96,
        "image_width": 128, "patch_grid": [12, 16], "joint_names": ["a", "b"], "action_dim": 2, "chunk_length": 25,
        "control_rate_hz": 50.0, "tokenizer": {"type": "char", "vocab": "ab", "max_length": 8, "pad_id": 0, "unk_id": 1,
        "lowercase": true}, "normalization": {"state_mean": [0, 0], "state_std": [1, 1], "action_mean": [0, 0], "action_std": [1, 1]}}"#;

    fn v2(extra: &str) -> String {
        format!(
            r#"{{"contract_version": 2, "name": "act", "kind": "chunk",
            "cameras": [{{"name": "wrist", "width": 224, "height": 224, "resize": "letterbox"}},
                        {{"name": "scene", "width": 320, "height": 180, "expected_width": 1280, "expected_height": 720}}],
            "state_names": ["a", "b", "c"], "action_names": ["a", "b"], "action_mode": "delta",
            "chunk_length": 10, "control_rate_hz": 30, "tokenizer": null,
            "normalization": {{"state_mean": [0,0,0], "state_std": [1,1,1], "action_mean": [0,0], "action_std": [1,1]}}{extra}}}"#
        )
    }

    #[test]
    fn version_1_reads_as_one_size_area_resized_cameras_with_language() {
        let m = PolicyMeta::parse(V1).unwrap();
        assert_eq!(m.camera_names(), ["main", "side"]);
        assert!(m.cameras.iter().all(|c| (c.width, c.height, c.resize) == (128, 96, ResizeMode::Area)));
        assert_eq!((m.state_names.clone(), m.action_names.clone()), (vec!["a".to_owned(), "b".into()], vec!["a".to_owned(), "b".into()]));
        assert_eq!(m.outputs, Outputs { token_weights: true, patch_maps: true });
        assert!(matches!(m.tokenizer, Some(TokenizerSpec::Char(_))));
        assert_eq!(m.image_len(), 2 * 128 * 96 * 3);
        assert!(m.contract_differences().is_empty());
    }

    #[test]
    fn version_2_reads_cameras_of_their_own_sizes_without_language() {
        let m = PolicyMeta::parse(&v2("")).unwrap();
        assert_eq!(m.kind, PolicyKind::Chunk);
        assert_eq!(m.cameras[0].resize, ResizeMode::Letterbox);
        assert_eq!((m.cameras[1].expected_width, m.cameras[1].expected_height), (Some(1280), Some(720)));
        assert_eq!(m.image_len(), 224 * 224 * 3 + 320 * 180 * 3);
        assert_eq!(m.tokenizer, None);
        assert_eq!(m.outputs, Outputs::default());
        assert_eq!(m.patch_grid, PATCH_GRID);
        assert!(m.contract_differences().is_empty(), "{:?}", m.contract_differences());
        assert!(m.explainable(Method::Occlusion, TokenMethod::Auto).is_ok());
        assert!(m.explainable(Method::Occlusion, TokenMethod::Occlusion).is_ok());
        assert!(m.explainable(Method::PolicyAttention, TokenMethod::Auto).unwrap_err().contains("patch_maps"));
        assert!(m.explainable(Method::Occlusion, TokenMethod::PolicyAttention).unwrap_err().contains("token_weights"));

        let flow = PolicyMeta::parse(&v2(r#", "flow": {"num_steps": 10, "time": "noise_at_one", "guidance": "autograd"}"#).replace(r#""kind": "chunk""#, r#""kind": "flow""#)).unwrap();
        assert_eq!(flow.kind, PolicyKind::Flow(FlowSpec { num_steps: 10, time: FlowTime::NoiseAtOne, guidance: Guidance::Autograd, padded_action_dim: None }));
    }

    #[test]
    fn broken_metadata_is_refused_with_the_reason() {
        let e = PolicyMeta::parse(r#"{"contract_version": 3}"#).unwrap_err();
        assert!(e.contains("contract_version is 3"), "{e}");
        let e = PolicyMeta::parse(&v2(r#", "outputs": ["heat"]"#)).unwrap_err();
        assert!(e.contains("heat"), "{e}");
        let e = PolicyMeta::parse(&v2(r#", "bogus": 1"#)).unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = PolicyMeta::parse(&v2("").replace(r#""kind": "chunk""#, r#""kind": "flow""#)).unwrap_err();
        assert!(e.contains("flow"), "{e}");

        let mut m = PolicyMeta::parse(&v2("")).unwrap();
        m.action_names.push("z".into());
        m.patch_grid = [200, 16];
        let d = m.contract_differences().join("\n");
        assert!(d.contains("action `z` has no state") && d.contains("does not fit camera `scene`") && d.contains("action_mean has 2 values"), "{d}");
    }
}
