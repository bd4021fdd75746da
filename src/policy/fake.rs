//! A deterministic [`PolicyRunner`] without libtorch, for tests and benchmarks of
//! everything around the policy: the pipeline, the driver, the explanations.
//!
//! Its chunk depends on every input, so that occlusion and a changed instruction move
//! it: action `t` of joint `j` ramps from the state towards
//! `state[j] + image_term(j) + token_term`, where `image_term(j)` is a fixed pseudo-random
//! weighting of camera `j % C`'s pixels and `token_term` grows with the number of real
//! tokens. Token weights are uniform over the real tokens; each camera's patch map is
//! its patches' mean brightness, normalized to sum to 1.

use super::{ForwardGate, Normalization, PolicyMeta, PolicyOutput, PolicyRunner, Priority};
use crate::core::config::Config;
use crate::core::contract::PATCH_GRID;
use crate::core::inputs::tokenizer::{CharTokenizer, TokenizerSpec, Tokens};
use crate::error::{Error, Result};

/// What the fake policy does wrong, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every inference fails.
    Error,
    /// Every chunk holds a NaN.
    NonFinite,
}

pub struct FakePolicy {
    meta: PolicyMeta,
    tokenizer: CharTokenizer,
    fault: Fault,
    gate: ForwardGate,
}

impl FakePolicy {
    /// A fake policy described by `meta`; fails if its tokenizer is invalid.
    pub fn new(meta: PolicyMeta) -> std::result::Result<Self, String> {
        let tokenizer = CharTokenizer::new(meta.tokenizer.clone())?;
        Ok(FakePolicy { meta, tokenizer, fault: Fault::None, gate: ForwardGate::default() })
    }

    /// The metadata of a policy made for `cfg` (its cameras, joints and control rate),
    /// with a small 16x12 input, the contract's patch grid, `chunk_length` actions and a
    /// character vocabulary of English letters, digits and a few Chinese characters:
    /// what tests and fuzzing pair with a configuration they drew. Passes
    /// [`PolicyMeta::differences`] against `cfg` for any `chunk_length` > 0.
    pub fn meta_for(cfg: &Config, chunk_length: usize) -> PolicyMeta {
        let n = cfg.joint_names.len();
        PolicyMeta {
            contract_version: 1,
            name: "fake".into(),
            camera_names: cfg.camera_names.clone(),
            image_height: 12,
            image_width: 16,
            patch_grid: PATCH_GRID,
            joint_names: cfg.joint_names.clone(),
            action_dim: n,
            chunk_length,
            control_rate_hz: cfg.control_rate_hz,
            tokenizer: TokenizerSpec {
                kind: "char".into(),
                vocab: "abcdefghijklmnopqrstuvwxyz0123456789 红绿蓝色方块圆柱体移动到上".into(),
                max_length: 32,
                pad_id: 0,
                unk_id: 1,
                lowercase: true,
            },
            normalization: Normalization { state_mean: vec![0.0; n], state_std: vec![1.0; n], action_mean: vec![0.0; n], action_std: vec![1.0; n] },
        }
    }

    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    fn one(&self, images: &[u8], state: &[f64], tokens: &Tokens) -> PolicyOutput {
        let m = &self.meta;
        let (c, h, w) = (m.camera_names.len(), m.image_height, m.image_width);
        let per_cam = h * w * 3;
        let [rows, cols] = m.patch_grid;
        let image_term: Vec<f64> = (0..c)
            .map(|k| {
                let img = &images[k * per_cam..(k + 1) * per_cam];
                let s: f64 = img.iter().enumerate().map(|(p, &v)| weight(p) * f64::from(v)).sum();
                s / (per_cam as f64 * 255.0)
            })
            .collect();
        let real = tokens.mask.iter().filter(|m| **m).count();
        let token_term = 0.01 * real as f64;
        let t_len = m.chunk_length;
        let actions = (0..t_len)
            .map(|t| {
                let ramp = (t + 1) as f64 / t_len as f64;
                state
                    .iter()
                    .enumerate()
                    .map(|(j, q)| {
                        let v = q + ramp * (image_term[j % c] + token_term);
                        if self.fault == Fault::NonFinite && j == 0 { f64::NAN } else { v }
                    })
                    .collect()
            })
            .collect();
        let token_weights = tokens.mask.iter().map(|&m| if m { 1.0 / real as f32 } else { 0.0 }).collect();
        let mut patch_maps = Vec::with_capacity(c * rows * cols);
        for k in 0..c {
            let img = &images[k * per_cam..(k + 1) * per_cam];
            let start = patch_maps.len();
            for r in 0..rows {
                for q in 0..cols {
                    let (y0, y1, x0, x1) = (r * h / rows, (r + 1) * h / rows, q * w / cols, (q + 1) * w / cols);
                    let mut s = 1.0f32; // never all zero: the map stays a distribution
                    for y in y0..y1 {
                        s += img[(y * w + x0) * 3..(y * w + x1) * 3].iter().map(|&v| f32::from(v)).sum::<f32>();
                    }
                    patch_maps.push(s);
                }
            }
            let total: f32 = patch_maps[start..].iter().sum();
            patch_maps[start..].iter_mut().for_each(|v| *v /= total);
        }
        PolicyOutput { actions, token_weights, patch_maps }
    }
}

/// A fixed pseudo-random weight in [-0.5, 0.5) per pixel byte.
fn weight(p: usize) -> f64 {
    ((p as u64).wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0 - 0.5
}

impl PolicyRunner for FakePolicy {
    fn meta(&self) -> &PolicyMeta {
        &self.meta
    }

    fn tokenizer(&self) -> &CharTokenizer {
        &self.tokenizer
    }

    fn infer_batch(&self, images: &[u8], batch: usize, state: &[f64], tokens: &Tokens, priority: Priority) -> Result<Vec<PolicyOutput>> {
        self.gate.run(priority, || {
            if self.fault == Fault::Error {
                return Err(Error::Inference("the fake policy fails on purpose".into()));
            }
            let n = self.image_len();
            if images.len() != batch * n || state.len() != self.meta.action_dim {
                return Err(Error::Inference(format!(
                    "input sizes: {} image bytes for batch {batch} (expected {}), {} state values (expected {})",
                    images.len(),
                    batch * n,
                    state.len(),
                    self.meta.action_dim
                )));
            }
            Ok(images.chunks_exact(n).map(|img| self.one(img, state, tokens)).collect())
        })
    }
}
