//! A deterministic [`PolicyRunner`] without libtorch, for tests and benchmarks of
//! everything around the policy: the pipeline, the driver, the explanations.
//!
//! Its chunk depends on every input, so that occlusion and a changed instruction move
//! it: action `t` of action `j` ramps from state `j % S` towards that state plus
//! `image_term(j) + token_term`, where `image_term(j)` is a fixed pseudo-random
//! weighting of camera `j % C`'s pixels and `token_term` weighs each real token by its
//! id and place. Token weights are uniform over the real tokens; each camera's patch map
//! is its patches' mean brightness, normalized to sum to 1 (each returned only when the
//! metadata's `outputs` name it). As a flow-matching policy (`kind: flow`) its velocity
//! is the exact flow from the noise to that chunk, so the integration ends on it, and
//! real-time chunking steers it as it would a learned one.

use super::flow::{self, VelocityField};
use super::noise::gaussian;
use super::{check_sizes, Batch, ForwardGate, PolicyMeta, PolicyOutput, PolicyRunner, Priority};
use crate::core::config::{Config, SmoothingKind};
use crate::core::contract::{ActionMode, CameraSpec, FlowSpec, FlowTime, Guidance, Normalization, Outputs, PolicyKind, ResizeMode, PATCH_GRID};
use crate::core::inputs::tokenizer::{CharSpec, Tokenizer, TokenizerSpec, Tokens};
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
    tokenizer: Option<Tokenizer>,
    fault: Fault,
    gate: ForwardGate,
}

impl FakePolicy {
    /// A fake policy described by `meta` (a character tokenizer or none).
    pub fn new(meta: PolicyMeta) -> std::result::Result<Self, String> {
        let tokenizer = meta.tokenizer.as_ref().map(|t| Tokenizer::new(t, None)).transpose()?;
        Ok(FakePolicy { meta, tokenizer, fault: Fault::None, gate: ForwardGate::default() })
    }

    /// The metadata of a policy made for `cfg` (its cameras, joints through
    /// `joint_name_map`, and control rate), with a small 16x12 input per camera, the
    /// contract's patch grid, `chunk_length` actions, both optional outputs and a
    /// character vocabulary of English letters, digits and a few Chinese characters; a
    /// flow-matching policy when `cfg` smooths by real-time chunking. What tests and
    /// fuzzing pair with a configuration they drew: passes [`PolicyMeta::differences`]
    /// against any valid `cfg` for any `chunk_length` > 0.
    pub fn meta_for(cfg: &Config, chunk_length: usize) -> PolicyMeta {
        let pairs = crate::core::config::value::parse_name_map(&cfg.joint_name_map).unwrap_or_default();
        let to_policy = |robot: &String| pairs.iter().find(|(r, _)| r == robot).map_or(robot, |(_, p)| p).clone();
        let names: Vec<String> = cfg.joint_names.iter().map(to_policy).collect();
        let camera = |name: &String| CameraSpec {
            name: name.clone(),
            width: 16,
            height: 12,
            resize: ResizeMode::Area,
            expected_width: None,
            expected_height: None,
        };
        let kind = if cfg.smoothing == SmoothingKind::Rtc {
            PolicyKind::Flow(FlowSpec { num_steps: 4, time: FlowTime::NoiseAtOne, guidance: Guidance::None, padded_action_dim: None })
        } else {
            PolicyKind::Chunk
        };
        PolicyMeta {
            contract_version: 2,
            name: "fake".into(),
            kind,
            cameras: cfg.camera_names.iter().map(camera).collect(),
            state_names: names.clone(),
            action_names: names.clone(),
            action_mode: ActionMode::Absolute,
            chunk_length,
            control_rate_hz: cfg.control_rate_hz,
            tokenizer: Some(TokenizerSpec::Char(CharSpec {
                vocab: "abcdefghijklmnopqrstuvwxyz0123456789 红绿蓝色方块圆柱体移动到上".into(),
                max_length: 32,
                pad_id: 0,
                unk_id: 1,
                lowercase: true,
            })),
            outputs: Outputs { token_weights: true, patch_maps: true },
            patch_grid: PATCH_GRID,
            normalization: Normalization::identity(names.len(), names.len()),
        }
    }

    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    fn one(&self, images: &[u8], state: &[f64], tokens: &Tokens) -> PolicyOutput {
        let m = &self.meta;
        let c = m.cameras.len();
        let [rows, cols] = m.patch_grid;
        let mut cameras = Vec::with_capacity(c);
        let mut offset = 0;
        for cam in &m.cameras {
            cameras.push((&images[offset..offset + cam.input_len()], cam.width, cam.height));
            offset += cam.input_len();
        }
        let image_term: Vec<f64> = cameras
            .iter()
            .map(|(img, _, _)| img.iter().enumerate().map(|(p, &v)| weight(p) * f64::from(v)).sum::<f64>() / (img.len() as f64 * 255.0))
            .collect();
        let real = tokens.len();
        let token_term: f64 =
            tokens.ids.iter().zip(&tokens.mask).enumerate().filter(|(_, (_, m))| **m).map(|(i, (id, _))| 0.002 * ((*id + i as i64) % 7) as f64).sum();
        let t_len = m.chunk_length;
        let s_len = state.len().max(1);
        let actions = (0..t_len)
            .map(|t| {
                let ramp = (t + 1) as f64 / t_len as f64;
                (0..m.action_names.len())
                    .map(|j| {
                        let v = state.get(j % s_len).copied().unwrap_or(0.0) + ramp * (image_term[j % c] + token_term);
                        if self.fault == Fault::NonFinite && j == 0 { f64::NAN } else { v }
                    })
                    .collect()
            })
            .collect();
        let token_weights = if m.outputs.token_weights {
            tokens.mask.iter().map(|&m| if m { 1.0 / real as f32 } else { 0.0 }).collect()
        } else {
            Vec::new()
        };
        if !m.outputs.patch_maps {
            return PolicyOutput { actions, token_weights, patch_maps: Vec::new() };
        }
        let mut patch_maps = Vec::with_capacity(c * rows * cols);
        for (img, w, h) in cameras {
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

impl FakePolicy {
    /// The outputs' chunks replaced by the integration of the exact flow to them.
    fn flow(&self, spec: FlowSpec, batch: &Batch<'_>, out: &mut [PolicyOutput]) -> Result<()> {
        let (t_len, a) = (self.meta.chunk_length, self.meta.action_names.len());
        let width = spec.width(a);
        let mut target = vec![0.0f32; out.len() * t_len * width];
        for (b, o) in out.iter().enumerate() {
            for (step, action) in o.actions.iter().enumerate() {
                for (j, v) in action.iter().enumerate() {
                    target[(b * t_len + step) * width + j] = *v as f32;
                }
            }
        }
        let noise = gaussian(batch.seed, t_len * width).repeat(out.len());
        let x = flow::integrate(&mut ExactFlow { target, time: spec.time }, noise, spec, t_len, batch.inpainting)?;
        for (b, o) in out.iter_mut().enumerate() {
            for (step, action) in o.actions.iter_mut().enumerate() {
                for (j, v) in action.iter_mut().enumerate() {
                    *v = f64::from(x[(b * t_len + step) * width + j]);
                }
            }
        }
        Ok(())
    }
}

/// The straight-line flow from noise to `target`: `v = (x - target) / t` with noise at
/// t = 1, `(target - x) / (1 - t)` with noise at t = 0; its Jacobian is diagonal.
struct ExactFlow {
    target: Vec<f32>,
    time: FlowTime,
}

impl ExactFlow {
    /// `v = k (x - target)`, with `k` for time `t`.
    fn k(&self, t: f32) -> f32 {
        match self.time {
            FlowTime::NoiseAtOne => 1.0 / t,
            FlowTime::NoiseAtZero => -1.0 / (1.0 - t),
        }
    }
}

impl VelocityField for ExactFlow {
    fn velocity(&mut self, x: &[f32], t: f32) -> Result<Vec<f32>> {
        let k = self.k(t);
        Ok(x.iter().zip(&self.target).map(|(x, a)| k * (x - a)).collect())
    }

    fn velocity_vjp(&mut self, x: &[f32], t: f32, cotangent: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let k = self.k(t);
        Ok((self.velocity(x, t)?, cotangent.iter().map(|c| k * c).collect()))
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

    fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    fn infer_batch(&self, batch: &Batch<'_>, priority: Priority) -> Result<Vec<PolicyOutput>> {
        self.gate.run(priority, || {
            if self.fault == Fault::Error {
                return Err(Error::Inference("the fake policy fails on purpose".into()));
            }
            check_sizes(&self.meta, batch)?;
            let n = self.image_len();
            let mut out: Vec<PolicyOutput> =
                batch.images.chunks_exact(n).enumerate().map(|(i, img)| self.one(img, batch.state, batch.tokens.get(i))).collect();
            if let PolicyKind::Flow(spec) = self.meta.kind {
                self.flow(spec, batch, &mut out)?;
            }
            Ok(out)
        })
    }
}
