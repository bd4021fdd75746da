//! The TorchScript policy runner: a module driven through libtorch (tch).

use std::path::{Path, PathBuf};

use tch::{CModule, IValue, Kind, Tensor};

use super::{ForwardGate, PolicyMeta, PolicyOutput, PolicyRunner, Priority};
use crate::core::config::{Config, Device};
use crate::core::inputs::tokenizer::{CharTokenizer, Tokens};
use crate::error::{Error, Result};

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Inference(e.to_string())
    }
}

pub struct TorchPolicy {
    module: CModule,
    meta: PolicyMeta,
    tokenizer: CharTokenizer,
    device: tch::Device,
    path: PathBuf,
    gate: ForwardGate,
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

impl TorchPolicy {
    /// Loads the TorchScript file and reads its metadata. Does not compare it with a
    /// configuration; see [`TorchPolicy::check`].
    pub fn load(path: &Path, device: Device) -> Result<TorchPolicy> {
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
        Ok(TorchPolicy { module, meta, tokenizer, device: tdev, path: path.to_owned(), gate: ForwardGate::default() })
    }

    /// Compares the metadata with the configuration, then runs one forward pass on zero
    /// inputs and checks the outputs' shapes: a policy that would fail later fails now.
    pub fn check(&self, cfg: &Config) -> Result<()> {
        super::check(self, cfg, &self.path)
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
        // Three parts, checked above.
        let mut next = || parts.pop().expect("three outputs");
        let maps = take_f32(next(), "patch_maps", &[b, c, r, cols])?;
        let weights = take_f32(next(), "token_weights", &[b, l])?;
        let actions = take_f32(next(), "actions", &[b, t, a])?;

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

impl PolicyRunner for TorchPolicy {
    fn meta(&self) -> &PolicyMeta {
        &self.meta
    }

    fn tokenizer(&self) -> &CharTokenizer {
        &self.tokenizer
    }

    fn infer_batch(&self, images: &[u8], batch: usize, state: &[f64], tokens: &Tokens, priority: Priority) -> Result<Vec<PolicyOutput>> {
        self.gate.run(priority, || self.forward(images, batch, state, tokens))
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
