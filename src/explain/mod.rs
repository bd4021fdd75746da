//! Explanations of what the policy did, for people watching in RViz: which instruction
//! tokens it weighted, and which image patches mattered, drawn over the camera images.
//!
//! Two sources for the patch grids: the policy's own attention maps (returned with every
//! inference, free, when the policy has them), and occlusion attribution (each patch
//! replaced by the image's mean colour, the change of the action chunk measured; all
//! occluded copies run as batches). Token weights are the policy's own, or found by token
//! occlusion (each token masked in turn): for a policy that returns none, or where what
//! the action depends on matters more than where the policy attends. This module
//! does no I/O; the node runs it on its own thread at its own rate.

pub mod font;
pub mod occlusion;
pub mod render;

use image::RgbImage;

pub use crate::core::config::{Method, TokenMethod};
use crate::core::config::Config;
use crate::core::pipeline::Observation;
use crate::error::{Error, Result};
use crate::policy::{PolicyOutput, PolicyRunner};

/// What can be changed while the node runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Tokens whose weight relative to the largest is under this are drawn neutral.
    pub threshold: f32,
    /// Weight of the colour map in the overlays.
    pub alpha: f32,
    pub method: Method,
    pub token_method: TokenMethod,
    /// Occluded copies per forward pass.
    pub occlusion_batch: usize,
}

impl Settings {
    pub fn from_config(c: &Config) -> Self {
        Settings {
            threshold: c.attention_threshold as f32,
            alpha: c.activation_alpha as f32,
            method: c.explanation_method,
            token_method: c.token_weight_method,
            occlusion_batch: c.occlusion_batch,
        }
    }
}

/// One explained inference.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub method: Method,
    /// Where the token weights came from (`Auto` resolved).
    pub token_method: TokenMethod,
    /// The instruction's tokens and their weights (none for a policy without language).
    pub tokens: Vec<String>,
    pub token_weights: Vec<f32>,
    /// One grid per camera, `rows x cols` row-major.
    pub grids: Vec<Vec<f32>>,
    pub rows: usize,
    pub cols: usize,
    /// The language heatmap, for a policy that takes an instruction.
    pub language: Option<RgbImage>,
    /// One per camera, at the camera image's size.
    pub overlays: Vec<RgbImage>,
}

/// The policy's own weights of the instruction's real tokens (none when it returns none).
pub fn own_token_weights(output: &PolicyOutput, obs: &Observation) -> Vec<f32> {
    output.token_weights.iter().zip(&obs.tokens.mask).filter(|(_, m)| **m).map(|(w, _)| *w).collect()
}

/// Grids, pictures and token weights for one inference. `output` is the inference's own
/// result (its token weights and, for `PolicyAttention`, its patch maps); the overlays
/// are drawn on the observation's full-size camera images.
pub fn explain(policy: &dyn PolicyRunner, obs: &Observation, output: &PolicyOutput, settings: &Settings) -> Result<Explanation> {
    let m = policy.meta();
    let [rows, cols] = m.patch_grid;
    m.explainable(settings.method, settings.token_method).map_err(Error::Inference)?;
    let grids = match settings.method {
        Method::PolicyAttention => output.patch_maps.chunks_exact(rows * cols).map(<[f32]>::to_vec).collect(),
        Method::Occlusion => occlusion::grids(policy, obs, settings.occlusion_batch)?,
    };
    let tokens = obs.tokens.pieces.clone();
    let token_method = match settings.token_method {
        TokenMethod::Auto if m.outputs.token_weights => TokenMethod::PolicyAttention,
        TokenMethod::Auto => TokenMethod::Occlusion,
        chosen => chosen,
    };
    let token_weights = match (m.tokenizer.is_some(), token_method) {
        (false, _) => Vec::new(),
        (true, TokenMethod::Occlusion) => occlusion::token_weights(policy, obs, settings.occlusion_batch)?,
        (true, _) => own_token_weights(output, obs),
    };
    let language = m.tokenizer.is_some().then(|| render::language_heatmap(&tokens, &token_weights, settings.threshold));
    let overlays = obs
        .cameras
        .iter()
        .zip(&grids)
        .map(|(cam, grid)| {
            let rgb = cam.rgb().map_err(|e| Error::Rejected { topic: cam.frame_id.clone(), reason: e.to_string() })?;
            Ok(render::overlay(&rgb, grid, rows, cols, settings.alpha))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Explanation { method: settings.method, token_method, tokens, token_weights, grids, rows, cols, language, overlays })
}
