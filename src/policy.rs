//! The policy runner: a TorchScript module driven through libtorch (tch), checked against
//! the contract in docs/POLICY_CONTRACT.md and against the node's configuration.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{CModule, IValue, Kind, Tensor};

use crate::config::{Config, Device};
use crate::error::{Error, Result};
use crate::tokenizer::{CharTokenizer, TokenizerSpec, Tokens};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Normalization {
    pub state_mean: Vec<f64>,
    pub state_std: Vec<f64>,
    pub action_mean: Vec<f64>,
    pub action_std: Vec<f64>,
}

/// The policy's own description, read from its `metadata()` method.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PolicyMeta {
    pub contract_version: u32,
    pub name: String,
    pub camera_names: Vec<String>,
    pub image_height: usize,
    pub image_width: usize,
    pub patch_grid: [usize; 2],
    pub joint_names: Vec<String>,
    pub action_dim: usize,
    pub chunk_length: usize,
    pub control_rate_hz: f64,
    pub tokenizer: TokenizerSpec,
    pub normalization: Normalization,
}

/// The grid the explanations are drawn on (issue: a 16x12 patch grid).
pub const PATCH_GRID: [usize; 2] = [12, 16];

impl PolicyMeta {
    /// Every way in which this metadata disagrees with the configuration or the contract.
    pub fn differences(&self, cfg: &Config) -> Vec<String> {
        let mut d = Vec::new();
        if self.contract_version != 1 {
            d.push(format!("contract_version is {}, this node speaks 1", self.contract_version));
        }
        if self.camera_names != cfg.camera_names {
            d.push(format!(
                "cameras: policy {:?}, parameter camera_names {:?}",
                self.camera_names, cfg.camera_names
            ));
        }
        if self.joint_names != cfg.joint_names {
            d.push(format!(
                "joints: policy {:?}, parameter joint_names {:?}",
                self.joint_names, cfg.joint_names
            ));
        }
        if self.action_dim != self.joint_names.len() {
            d.push(format!(
                "action_dim {} differs from the policy's {} joint names",
                self.action_dim,
                self.joint_names.len()
            ));
        }
        if (self.control_rate_hz - cfg.control_rate_hz).abs() > 1e-9 {
            d.push(format!(
                "control rate: policy {} Hz, parameter control_rate_hz {} Hz",
                self.control_rate_hz, cfg.control_rate_hz
            ));
        }
        if self.patch_grid != PATCH_GRID {
            d.push(format!("patch_grid {:?}, expected {:?}", self.patch_grid, PATCH_GRID));
        }
        if self.chunk_length == 0 {
            d.push("chunk_length is 0".into());
        }
        if self.image_height == 0 || self.image_width == 0 {
            d.push(format!("image size {}x{}", self.image_width, self.image_height));
        }
        let n = &self.normalization;
        for (name, v) in [
            ("state_mean", &n.state_mean),
            ("state_std", &n.state_std),
            ("action_mean", &n.action_mean),
            ("action_std", &n.action_std),
        ] {
            if v.len() != self.action_dim {
                d.push(format!("normalization.{name} has {} values, action_dim is {}", v.len(), self.action_dim));
            }
            if v.iter().any(|x| !x.is_finite()) || (name.ends_with("std") && v.iter().any(|x| *x <= 0.0)) {
                d.push(format!("normalization.{name} holds invalid values {v:?}"));
            }
        }
        if let Err(e) = CharTokenizer::new(self.tokenizer.clone()) {
            d.push(e);
        }
        d
    }
}

/// What one forward pass gives back for one batch element, in the node's units.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutput {
    /// `chunk_length` actions of `action_dim` joint positions.
    pub actions: Vec<Vec<f64>>,
    /// One weight per token slot (`max_length`), 0 on padding.
    pub token_weights: Vec<f32>,
    /// Cameras x rows x cols, row-major.
    pub patch_maps: Vec<f32>,
}

pub struct Policy {
    module: CModule,
    meta: PolicyMeta,
    tokenizer: CharTokenizer,
    device: tch::Device,
    path: PathBuf,
    /// One forward pass at a time, and the control path's first: background work
    /// (occlusion batches) waits while an inference wants the policy, so an inference
    /// waits at most for the one batch already running.
    busy: std::sync::Mutex<()>,
    urgent: std::sync::atomic::AtomicUsize,
}

/// Sets libtorch's intra-op thread count for the process (the `torch_threads`
/// parameter); 0 keeps libtorch's default. Call it before the first inference.
pub fn set_torch_threads(n: usize) {
    if n > 0 {
        tch::set_num_threads(n as i32);
    }
}

fn load_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::PolicyLoad { path: path.to_owned(), reason: reason.into() }
}

fn tch_device(device: Device) -> Result<tch::Device> {
    match device {
        Device::Cpu => Ok(tch::Device::Cpu),
        Device::Cuda(i) => {
            let backend = load_cuda_backend();
            let n = tch::Cuda::device_count();
            if (i as i64) < n {
                Ok(tch::Device::Cuda(i))
            } else {
                let why = backend.err().map_or(String::new(), |e| format!(" ({e})"));
                Err(Error::Device {
                    requested: device.to_string(),
                    reason: format!("libtorch sees {n} CUDA device(s){why}"),
                })
            }
        }
    }
}

/// The linker drops libtorch_cuda.so from the binary as unneeded (nothing refers to it
/// by symbol), and without it libtorch sees no GPU. Loading it on demand keeps CPU-only
/// machines free of the CUDA libraries.
/// On failure, the loader's reason (a missing library, say), for the error message.
fn load_cuda_backend() -> std::result::Result<(), String> {
    // SAFETY: dlopen with a valid C string; the handle is deliberately kept open.
    let handle = unsafe { libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if !handle.is_null() {
        return Ok(());
    }
    // SAFETY: dlerror returns null or a valid C string describing the last failure.
    let reason = unsafe {
        let e = libc::dlerror();
        if e.is_null() { "dlopen failed".to_owned() } else { std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned() }
    };
    Err(format!("loading libtorch_cuda.so: {reason}"))
}

impl Policy {
    /// Loads the TorchScript file and reads its metadata. Does not compare it with a
    /// configuration; see [`Policy::check`].
    pub fn load(path: &Path, device: Device) -> Result<Policy> {
        if !path.is_file() {
            return Err(load_error(path, "no such file"));
        }
        let tdev = tch_device(device)?;
        let mut module = CModule::load_on_device(path, tdev)
            .map_err(|e| load_error(path, format!("not a loadable TorchScript module: {}", first_line(&e.to_string()))))?;
        module.set_eval();
        let meta = match module.method_is::<IValue>("metadata", &[]) {
            Ok(IValue::String(s)) => s,
            Ok(other) => return Err(load_error(path, format!("metadata() returned {other:?}, expected a string"))),
            Err(e) => return Err(load_error(path, format!("no metadata() method: {}", first_line(&e.to_string())))),
        };
        let meta: PolicyMeta = serde_json::from_str(&meta)
            .map_err(|e| load_error(path, format!("metadata is not valid contract JSON: {e}")))?;
        let tokenizer = CharTokenizer::new(meta.tokenizer.clone()).map_err(|e| load_error(path, e))?;
        Ok(Policy {
            module,
            meta,
            tokenizer,
            device: tdev,
            path: path.to_owned(),
            busy: std::sync::Mutex::new(()),
            urgent: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    pub fn meta(&self) -> &PolicyMeta {
        &self.meta
    }

    pub fn tokenizer(&self) -> &CharTokenizer {
        &self.tokenizer
    }

    /// Compares the metadata with the configuration, then runs one forward pass on zero
    /// inputs and checks the outputs' shapes: a policy that would fail later fails now.
    pub fn check(&self, cfg: &Config) -> Result<()> {
        let differences = self.meta.differences(cfg);
        if !differences.is_empty() {
            return Err(Error::PolicyMismatch { path: self.path.clone(), differences });
        }
        let m = &self.meta;
        let images = vec![0u8; self.image_len()];
        let tokens = self.tokenizer.encode("");
        self.infer(&images, &vec![0.0; m.action_dim], &tokens).map_err(|e| Error::PolicyMismatch {
            path: self.path.clone(),
            differences: vec![format!("a forward pass on zero inputs failed: {e}")],
        })?;
        Ok(())
    }

    /// Bytes of one observation's images: cameras x height x width x 3.
    pub fn image_len(&self) -> usize {
        let m = &self.meta;
        m.camera_names.len() * m.image_height * m.image_width * 3
    }

    /// One forward pass. `images` holds the cameras' RGB images at the policy's size in
    /// camera order, `state` the joint positions in the policy's joint order.
    pub fn infer(&self, images: &[u8], state: &[f64], tokens: &Tokens) -> Result<PolicyOutput> {
        Ok(self.infer_batch(images, 1, state, tokens)?.remove(0))
    }

    /// `batch` observations that share state and instruction (occlusion attribution runs
    /// many copies of one frame), ahead of any background work.
    pub fn infer_batch(&self, images: &[u8], batch: usize, state: &[f64], tokens: &Tokens) -> Result<Vec<PolicyOutput>> {
        use std::sync::atomic::Ordering;
        self.urgent.fetch_add(1, Ordering::AcqRel);
        let guard = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        self.urgent.fetch_sub(1, Ordering::AcqRel);
        let out = self.forward(images, batch, state, tokens);
        drop(guard);
        out
    }

    /// Like [`Policy::infer_batch`], for work that can wait: it yields to every
    /// inference that wants the policy.
    pub fn infer_batch_background(&self, images: &[u8], batch: usize, state: &[f64], tokens: &Tokens) -> Result<Vec<PolicyOutput>> {
        use std::sync::atomic::Ordering;
        loop {
            while self.urgent.load(Ordering::Acquire) > 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            let guard = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            if self.urgent.load(Ordering::Acquire) > 0 {
                continue; // an inference arrived meanwhile: let it go first
            }
            let out = self.forward(images, batch, state, tokens);
            drop(guard);
            return out;
        }
    }

    fn forward(&self, images: &[u8], batch: usize, state: &[f64], tokens: &Tokens) -> Result<Vec<PolicyOutput>> {
        let m = &self.meta;
        let (c, h, w, a, l) = (
            m.camera_names.len() as i64,
            m.image_height as i64,
            m.image_width as i64,
            m.action_dim as i64,
            tokens.ids.len() as i64,
        );
        if images.len() != batch * self.image_len() || state.len() != m.action_dim {
            return Err(Error::Inference(format!(
                "input sizes: {} image bytes for batch {batch} (expected {}), {} state values (expected {})",
                images.len(),
                batch * self.image_len(),
                state.len(),
                m.action_dim
            )));
        }
        let b = batch as i64;
        let n = &m.normalization;
        let state_n: Vec<f32> = state
            .iter()
            .zip(n.state_mean.iter().zip(&n.state_std))
            .map(|(q, (mu, sd))| ((q - mu) / sd) as f32)
            .collect();
        let _guard = tch::no_grad_guard();
        let dev = self.device;
        let images_t = Tensor::f_from_data_size(images, &[b, c, h, w, 3], Kind::Uint8)?.to_device(dev);
        let state_t = Tensor::from_slice(&state_n).view([1, a]).expand([b, a], false).to_device(dev);
        let ids_t = Tensor::from_slice(&tokens.ids).view([1, l]).expand([b, l], false).to_device(dev);
        let mask_u8: Vec<u8> = tokens.mask.iter().map(|&x| x as u8).collect();
        let mask_t = Tensor::f_from_data_size(&mask_u8, &[1, l], Kind::Bool)?.expand([b, l], false).to_device(dev);

        let out = self.module.forward_is(&[
            IValue::Tensor(images_t),
            IValue::Tensor(state_t),
            IValue::Tensor(ids_t),
            IValue::Tensor(mask_t),
        ])?;
        let IValue::Tuple(mut parts) = out else {
            return Err(Error::Inference(format!("forward returned {out:?}, expected a tuple of 3 tensors")));
        };
        if parts.len() != 3 {
            return Err(Error::Inference(format!("forward returned {} values, expected 3", parts.len())));
        }
        let [r, cols] = m.patch_grid.map(|x| x as i64);
        let t = m.chunk_length as i64;
        let maps = take_f32(parts.pop().unwrap(), "patch_maps", &[b, c, r, cols])?;
        let weights = take_f32(parts.pop().unwrap(), "token_weights", &[b, l])?;
        let actions = take_f32(parts.pop().unwrap(), "actions", &[b, t, a])?;

        // A non-finite action would poison every blended command it takes part in; the
        // whole chunk is refused here, and the node holds.
        if let Some(i) = actions.iter().position(|v| !v.is_finite()) {
            return Err(Error::Inference(format!("policy returned a non-finite action ({} at index {i})", actions[i])));
        }
        let (t, a, l) = (t as usize, a as usize, l as usize);
        let per_map = maps.len() / batch;
        Ok((0..batch)
            .map(|i| PolicyOutput {
                actions: actions[i * t * a..(i + 1) * t * a]
                    .chunks_exact(a)
                    .map(|row| {
                        row.iter()
                            .zip(n.action_mean.iter().zip(&n.action_std))
                            .map(|(x, (mu, sd))| *x as f64 * sd + mu)
                            .collect()
                    })
                    .collect(),
                token_weights: weights[i * l..(i + 1) * l].to_vec(),
                patch_maps: maps[i * per_map..(i + 1) * per_map].to_vec(),
            })
            .collect())
    }
}

fn take_f32(v: IValue, name: &str, shape: &[i64]) -> Result<Vec<f32>> {
    let IValue::Tensor(t) = v else {
        return Err(Error::Inference(format!("{name}: expected a tensor, got {v:?}")));
    };
    if t.size() != shape {
        return Err(Error::Inference(format!("{name}: shape {:?}, expected {shape:?}", t.size())));
    }
    if t.kind() != Kind::Float {
        return Err(Error::Inference(format!("{name}: dtype {:?}, expected float32", t.kind())));
    }
    let t = t.to_device(tch::Device::Cpu).contiguous();
    let mut out = vec![0f32; t.numel()];
    t.f_copy_data(&mut out, t.numel())?;
    Ok(out)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
