//! Explanations of what the policy did, for people watching in RViz: which instruction
//! tokens it weighted, and which image patches mattered, drawn over the camera images.
//!
//! Two sources for the patch grids: the policy's own attention maps (returned with every
//! inference, free), and occlusion attribution (each patch replaced by the image's mean
//! colour, the change of the action chunk measured; all occluded copies run as batches).
//! This module does no I/O; the node runs it on its own thread at its own rate.

pub mod font;
pub mod render;

use std::fmt;
use image::RgbImage;

use crate::core::Observation;
use crate::error::{Error, Result};
use crate::policy::{Policy, PolicyOutput};

/// Where the patch grids come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    PolicyAttention,
    Occlusion,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "policy_attention" => Some(Method::PolicyAttention),
            "occlusion" => Some(Method::Occlusion),
            _ => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::PolicyAttention => "policy_attention",
            Method::Occlusion => "occlusion",
        })
    }
}

/// What can be changed while the node runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Tokens whose weight relative to the largest is under this are drawn neutral.
    pub threshold: f32,
    /// Weight of the colour map in the overlays.
    pub alpha: f32,
    pub method: Method,
    /// Occluded copies per forward pass.
    pub occlusion_batch: usize,
}

impl Settings {
    pub fn from_config(c: &crate::config::Config) -> Self {
        Settings {
            threshold: c.attention_threshold as f32,
            alpha: c.activation_alpha as f32,
            method: c.explanation_method,
            occlusion_batch: c.occlusion_batch,
        }
    }
}

/// One explained inference.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub method: Method,
    pub tokens: Vec<String>,
    pub token_weights: Vec<f32>,
    /// One grid per camera, `rows x cols` row-major.
    pub grids: Vec<Vec<f32>>,
    pub rows: usize,
    pub cols: usize,
    pub language: RgbImage,
    /// One per camera, at the camera image's size.
    pub overlays: Vec<RgbImage>,
}

/// The grids by occlusion: for every camera and patch, the Euclidean distance between
/// the action chunk with that patch replaced by the image's mean colour and the chunk
/// of the untouched input. The untouched input runs in the same batches (1 + C x rows x
/// cols inputs in all), so the comparison is within one deterministic computation.
pub fn occlusion_grids(policy: &Policy, obs: &Observation, batch: usize) -> Result<Vec<Vec<f32>>> {
    let m = policy.meta();
    let (c, h, w) = (m.camera_names.len(), m.image_height, m.image_width);
    let [rows, cols] = m.patch_grid;
    if h % rows != 0 || w % cols != 0 {
        return Err(Error::Inference(format!(
            "occlusion needs the {w}x{h} input to divide into the {cols}x{rows} grid"
        )));
    }
    let (ph, pw) = (h / rows, w / cols);
    let per_cam = h * w * 3;
    let means: Vec<[u8; 3]> = (0..c)
        .map(|k| {
            let img = &obs.images[k * per_cam..(k + 1) * per_cam];
            let mut s = [0u64; 3];
            for px in img.chunks_exact(3) {
                for j in 0..3 {
                    s[j] += px[j] as u64;
                }
            }
            let n = (h * w) as u64;
            s.map(|v| ((v + n / 2) / n) as u8)
        })
        .collect();
    // Input 0 is the untouched observation, input 1 + (k * rows + r) * cols + q has patch
    // (r, q) of camera k occluded.
    let total = 1 + c * rows * cols;
    let make = |i: usize, buf: &mut Vec<u8>| {
        buf.extend_from_slice(&obs.images);
        if i == 0 {
            return;
        }
        let j = i - 1;
        let (k, r, q) = (j / (rows * cols), (j / cols) % rows, j % cols);
        let start = buf.len() - obs.images.len() + k * per_cam;
        for y in r * ph..(r + 1) * ph {
            for x in q * pw..(q + 1) * pw {
                let o = start + (y * w + x) * 3;
                buf[o..o + 3].copy_from_slice(&means[k]);
            }
        }
    };
    let batch = batch.max(1);
    let mut outputs: Vec<PolicyOutput> = Vec::with_capacity(total);
    let mut buf = Vec::with_capacity(batch * obs.images.len());
    let mut i = 0;
    while i < total {
        let n = batch.min(total - i);
        buf.clear();
        for b in 0..n {
            make(i + b, &mut buf);
        }
        outputs.extend(policy.infer_batch_background(&buf, n, &obs.state, &obs.tokens)?);
        i += n;
    }
    let base = &outputs[0].actions;
    let dist = |o: &PolicyOutput| -> f32 {
        o.actions
            .iter()
            .flatten()
            .zip(base.iter().flatten())
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt() as f32
    };
    Ok((0..c)
        .map(|k| (0..rows * cols).map(|p| dist(&outputs[1 + k * rows * cols + p])).collect())
        .collect())
}

/// Grids, pictures and token weights for one inference. `output` is the inference's own
/// result (its token weights and, for `PolicyAttention`, its patch maps); the overlays
/// are drawn on the observation's full-size camera images.
pub fn explain(policy: &Policy, obs: &Observation, output: &PolicyOutput, settings: &Settings) -> Result<Explanation> {
    let m = policy.meta();
    let [rows, cols] = m.patch_grid;
    let grids = match settings.method {
        Method::PolicyAttention => output.patch_maps.chunks_exact(rows * cols).map(<[f32]>::to_vec).collect(),
        Method::Occlusion => occlusion_grids(policy, obs, settings.occlusion_batch)?,
    };
    let tokens = obs.tokens.pieces.clone();
    let token_weights = output.token_weights[..tokens.len()].to_vec();
    let language = render::language_heatmap(&tokens, &token_weights, settings.threshold);
    let overlays = obs
        .cameras
        .iter()
        .zip(&grids)
        .map(|(cam, grid)| Ok(render::overlay(&cam.rgb()?, grid, rows, cols, settings.alpha)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Explanation { method: settings.method, tokens, token_weights, grids, rows, cols, language, overlays })
}
