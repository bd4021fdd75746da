//! `vla_controller inspect`: explanations without a robot. Camera PNGs, a joint vector and
//! an instruction in; the overlays, the language heatmap and a JSON of actions, token
//! weights and grids out. The same policy runner and explanation code as the node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::core::config::{Config, ParamValue, Params};
use crate::core::inputs::image::{decode, Expected};
use crate::core::inputs::CameraImage;
use crate::core::pipeline::Observation;
use crate::explain::{self, Settings};
use crate::policy::{self, CheckAgainst, PolicyRunner};

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Camera images (PNG), one per camera in the policy's camera order (the demo
    /// policy's: main side top).
    #[arg(required_unless_present = "batch")]
    pub images: Vec<PathBuf>,
    /// The policy's state (its state_names order: for most policies the joint positions), comma-separated.
    #[arg(long, allow_hyphen_values = true, value_delimiter = ',', required_unless_present = "batch")]
    pub joints: Vec<f64>,
    /// The instruction, in any language the policy knows (none for a policy without
    /// language).
    #[arg(long)]
    pub instruction: Option<String>,
    /// Output folder.
    #[arg(short, long, default_value = "out/inspect")]
    pub out: PathBuf,
    /// Many cases in one run: a JSON Lines file, one object per line with `images`,
    /// `joints`, `instruction` and `out` (relative paths are taken from the file's folder).
    #[arg(long)]
    pub batch: Option<PathBuf>,
    // Defaults from the parameter table, the node's own.
    #[arg(long, default_value_os_t = Config::default().policy_path)]
    pub policy: PathBuf,
    /// cpu, cuda or cuda:N
    #[arg(long, default_value_t = Config::default().device.to_string())]
    pub device: String,
    /// occlusion or policy_attention: where the patch grids come from
    #[arg(long, default_value_t = Config::default().explanation_method.to_string())]
    pub method: String,
    /// auto, occlusion or policy_attention: where the token weights come from (auto: the
    /// policy's own when it returns them, token occlusion otherwise)
    #[arg(long, default_value_t = Config::default().token_weight_method.to_string())]
    pub token_method: String,
    #[arg(long, default_value_t = Config::default().attention_threshold)]
    pub threshold: f64,
    #[arg(long, default_value_t = Config::default().activation_alpha)]
    pub alpha: f64,
    #[arg(long, default_value_t = Config::default().occlusion_batch)]
    pub occlusion_batch: usize,
    /// Also write what the policy sees: each camera's image at the policy's input size,
    /// as `input_<camera>.png`.
    #[arg(long)]
    pub save_inputs: bool,
}

#[derive(Debug, Deserialize)]
struct Case {
    images: Vec<PathBuf>,
    joints: Vec<f64>,
    #[serde(default)]
    instruction: String,
    out: PathBuf,
}

fn load_png(path: &Path) -> anyhow::Result<Arc<CameraImage>> {
    let img = image::open(path).with_context(|| format!("reading {}", path.display()))?.to_rgb8();
    let (width, height) = img.dimensions();
    Ok(Arc::new(CameraImage {
        stamp: 0,
        frame_id: path.display().to_string(),
        width,
        height,
        encoding: "rgb8".into(),
        step: width * 3,
        data: img.into_raw().into(),
    }))
}

impl InspectArgs {
    /// The options as the node's parameters, validated exactly as the node validates them.
    fn config(&self) -> anyhow::Result<Config> {
        let params: Params = [
            ("policy_path", ParamValue::String(self.policy.to_string_lossy().into_owned())),
            ("device", ParamValue::String(self.device.clone())),
            ("explanation_method", ParamValue::String(self.method.clone())),
            ("token_weight_method", ParamValue::String(self.token_method.clone())),
            ("attention_threshold", ParamValue::Double(self.threshold)),
            ("activation_alpha", ParamValue::Double(self.alpha)),
            ("occlusion_batch", ParamValue::Integer(self.occlusion_batch.try_into().unwrap_or(i64::MAX))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Ok(Config::from_params(&params)?.0)
    }

    /// The cases to explain: the one on the command line, or those of `--batch`.
    fn cases(&self) -> anyhow::Result<Vec<Case>> {
        let Some(path) = &self.batch else {
            return Ok(vec![Case {
                images: self.images.clone(),
                joints: self.joints.clone(),
                instruction: self.instruction.clone().unwrap_or_default(),
                out: self.out.clone(),
            }]);
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let mut c: Case = serde_json::from_str(l).with_context(|| format!("{} line {}", path.display(), i + 1))?;
                c.images = c.images.iter().map(|p| dir.join(p)).collect();
                c.out = dir.join(&c.out);
                Ok(c)
            })
            .collect()
    }
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let settings = Settings::from_config(&cfg);
    let policy = policy::load(&cfg, CheckAgainst::ContractOnly)?;
    for case in &args.cases()? {
        inspect_one(&policy, case, &settings, args.save_inputs)?;
    }
    Ok(())
}

fn inspect_one(policy: &dyn PolicyRunner, case: &Case, settings: &Settings, save_inputs: bool) -> anyhow::Result<()> {
    let m = policy.meta();
    let camera_names = m.camera_names();
    if case.images.len() != camera_names.len() {
        bail!("{} images given; the policy takes {} ({})", case.images.len(), camera_names.len(), camera_names.join(" "));
    }
    if case.joints.len() != m.state_names.len() {
        bail!("{} joint values given; the policy's state has {} ({})", case.joints.len(), m.state_names.len(), m.state_names.join(" "));
    }
    let cameras = case.images.iter().map(|p| load_png(p)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut images = Vec::with_capacity(policy.image_len());
    let mut buf = Vec::new();
    // Any picture size: each camera's picture is resized to its input as the policy says.
    for ((cam, path), spec) in cameras.iter().zip(&case.images).zip(&m.cameras) {
        decode(&cam.raw(), Expected::Any, spec.width, spec.height, spec.resize, &mut buf).with_context(|| path.display().to_string())?;
        images.extend_from_slice(&buf);
    }
    let tokens = match policy.tokenizer() {
        Some(_) if case.instruction.trim().is_empty() => bail!("the policy takes an instruction: give --instruction"),
        Some(t) => t.encode(case.instruction.trim()),
        None if case.instruction.trim().is_empty() => Default::default(),
        None => bail!("the policy takes no instruction (give none)"),
    };
    let obs = Observation {
        stamp: 0,
        arrival: 0,
        images,
        state: case.joints.clone(),
        instruction: case.instruction.as_str().into(),
        tokens: Arc::new(tokens),
        instruction_seq: 1,
        cameras,
        inpaint: None,
    };
    let t0 = Instant::now();
    let output = policy.infer(&obs.images, &obs.state, &obs.tokens, obs.stamp as u64)?;
    let infer_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let e = explain::explain(policy, &obs, &output, settings)?;
    let explain_ms = t1.elapsed().as_secs_f64() * 1e3;

    std::fs::create_dir_all(&case.out).with_context(|| format!("creating {}", case.out.display()))?;
    let mut written = Vec::new();
    if save_inputs {
        let mut offset = 0;
        for c in &m.cameras {
            let rgb = obs.images[offset..offset + c.input_len()].to_vec();
            offset += c.input_len();
            // input_len is width x height x 3: the buffer fits.
            let img = image::RgbImage::from_raw(c.width as u32, c.height as u32, rgb).expect("w x h x 3 bytes");
            let p = case.out.join(format!("input_{}.png", c.name));
            img.save(&p).with_context(|| format!("writing {}", p.display()))?;
            written.push(p);
        }
    }
    for (name, overlay) in camera_names.iter().zip(&e.overlays) {
        let p = case.out.join(format!("overlay_{name}.png"));
        overlay.save(&p).with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
    }
    if let Some(language) = &e.language {
        let p = case.out.join("language.png");
        language.save(&p).with_context(|| format!("writing {}", p.display()))?;
        written.push(p);
    }
    let grids: serde_json::Map<String, serde_json::Value> =
        camera_names.iter().cloned().zip(e.grids.iter().map(|g| serde_json::json!(g))).collect();
    let json = serde_json::json!({
        "policy": m.name,
        "instruction": case.instruction,
        "joints": case.joints,
        "joint_names": m.state_names,
        "action_names": m.action_names,
        "action_mode": format!("{:?}", m.action_mode).to_lowercase(),
        "actions": output.actions,
        "tokens": e.tokens,
        "token_ids": obs.tokens.ids,
        "token_mask": obs.tokens.mask,
        "token_weights": e.token_weights,
        "policy_token_weights": explain::own_token_weights(&output, &obs),
        "attention_threshold": settings.threshold,
        "method": e.method.to_string(),
        "token_method": e.token_method.to_string(),
        "grid_rows": e.rows,
        "grid_cols": e.cols,
        "grids": grids,
        "policy_attention": camera_names.iter().cloned()
            .zip(output.patch_maps.chunks_exact(e.rows * e.cols).map(|g| serde_json::json!(g)))
            .collect::<serde_json::Map<_, _>>(),
        "inference_ms": infer_ms,
        "explain_ms": explain_ms,
    });
    let p = case.out.join("explanation.json");
    std::fs::write(&p, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", p.display()))?;
    written.push(p);
    println!(
        "{}: {:?} -> {} ({} explanation, {:.0} ms; inference {:.1} ms)",
        case.out.display(),
        case.instruction,
        // Each a file name joined to the output folder above.
        written.iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect::<Vec<_>>().join(", "),
        e.method,
        explain_ms,
        infer_ms
    );
    Ok(())
}
