//! The TorchScript policy runner: a module driven through libtorch (tch).

use std::path::{Path, PathBuf};

use tch::{CModule, IValue, Kind, Tensor};

use super::flow::{self, VelocityField};
use super::noise::gaussian;
use super::{check_sizes, Batch, ForwardGate, PolicyMeta, PolicyOutput, PolicyRunner, Priority};
use crate::core::config::{Config, Device};
use crate::core::contract::{FlowSpec, PolicyKind};
use crate::core::inputs::tokenizer::{Tokenizer, TokenizerSpec};
use crate::error::{Error, Result};

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        Error::Inference(e.to_string())
    }
}

pub struct TorchPolicy {
    module: CModule,
    meta: PolicyMeta,
    tokenizer: Option<Tokenizer>,
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
    /// Loads the TorchScript file and reads its metadata (and a Hugging Face tokenizer's
    /// `tokenizer.json`, from the file or the method the metadata names). Does not
    /// compare it with a configuration; see [`TorchPolicy::check`].
    pub fn load(path: &Path, device: Device) -> Result<TorchPolicy> {
        if !path.is_file() {
            return Err(load_error(path, "no such file"));
        }
        let tdev = tch_device(device)?;
        let mut module = CModule::load_on_device(path, tdev)
            .map_err(|e| load_error(path, format!("not a loadable TorchScript module: {}", first_line(&e.to_string()))))?;
        module.set_eval();
        let meta = call_string(&module, "metadata").map_err(|e| load_error(path, e))?;
        let meta = PolicyMeta::parse(&meta).map_err(|e| load_error(path, e))?;
        let tokenizer = match &meta.tokenizer {
            None => None,
            Some(spec) => {
                let json = hf_json(&module, path, spec).map_err(|e| load_error(path, e))?;
                Some(Tokenizer::new(spec, json.as_deref()).map_err(|e| load_error(path, e))?)
            }
        };
        Ok(TorchPolicy { module, meta, tokenizer, device: tdev, path: path.to_owned(), gate: ForwardGate::default() })
    }

    /// Compares the metadata with the configuration, then runs one forward pass on zero
    /// inputs and checks the outputs' shapes: a policy that would fail later fails now.
    pub fn check(&self, cfg: &Config) -> Result<()> {
        super::check(self, cfg, &self.path)
    }

    /// The module's inputs for `batch`: images (one tensor `[B, C, H, W, 3]` in version
    /// 1, a list of `[B, H_k, W_k, 3]` in version 2), normalized state, token ids and mask.
    fn inputs(&self, batch: &Batch<'_>) -> Result<Vec<IValue>> {
        let m = &self.meta;
        let (b, dev) = (batch.size as i64, self.device);
        let per_obs = m.image_len();
        let images = if m.contract_version == 1 {
            let c = &m.cameras[0];
            let shape = [b, m.cameras.len() as i64, c.height as i64, c.width as i64, 3];
            IValue::Tensor(Tensor::f_from_data_size(batch.images, &shape, Kind::Uint8)?.to_device(dev))
        } else {
            let mut offset = 0;
            let mut per_camera = Vec::with_capacity(m.cameras.len());
            for c in &m.cameras {
                let mut bytes = Vec::with_capacity(batch.size * c.input_len());
                for obs in batch.images.chunks_exact(per_obs) {
                    bytes.extend_from_slice(&obs[offset..offset + c.input_len()]);
                }
                offset += c.input_len();
                per_camera.push(Tensor::f_from_data_size(&bytes, &[b, c.height as i64, c.width as i64, 3], Kind::Uint8)?.to_device(dev));
            }
            IValue::TensorList(per_camera)
        };
        let n = &m.normalization;
        let state: Vec<f32> =
            batch.state.iter().zip(n.state_mean.iter().zip(&n.state_std)).map(|(q, (mu, sd))| ((q - mu) / sd) as f32).collect();
        let s = state.len() as i64;
        let state_t = Tensor::from_slice(&state).view([1, s]).expand([b, s], false).to_device(dev);
        let l = batch.tokens.get(0).ids.len();
        let mut ids = Vec::with_capacity(batch.size * l);
        let mut mask = Vec::with_capacity(batch.size * l);
        for i in 0..batch.size {
            let t = batch.tokens.get(i);
            if t.ids.len() != l {
                return Err(Error::Inference(format!("token lengths differ within a batch: {} and {l}", t.ids.len())));
            }
            ids.extend_from_slice(&t.ids);
            mask.extend(t.mask.iter().map(|&x| x as u8));
        }
        let ids_t = Tensor::f_from_slice(&ids)?.view([b, l as i64]).to_device(dev);
        let mask_t = Tensor::f_from_data_size(&mask, &[b, l as i64], Kind::Bool)?.to_device(dev);
        Ok(vec![images, IValue::Tensor(state_t), IValue::Tensor(ids_t), IValue::Tensor(mask_t)])
    }

    /// One inference of `batch`: the chunk (normalized) and the optional outputs.
    fn run(&self, batch: &Batch<'_>) -> Result<(Tensor, Extras)> {
        check_sizes(&self.meta, batch)?;
        let _guard = tch::no_grad_guard();
        let inputs = self.inputs(batch)?;
        match (self.meta.contract_version, self.meta.kind) {
            (1, _) => split_v1(self.module.forward_is(&inputs)?),
            (_, PolicyKind::Chunk) => match split_v2(self.module.forward_is(&inputs)?, "forward")? {
                (IValue::Tensor(actions), extras) => Ok((actions, extras)),
                (other, _) => Err(Error::Inference(format!("forward: first output {other:?}, expected the actions tensor"))),
            },
            (_, PolicyKind::Flow(spec)) => {
                let (context, extras) = split_v2(self.module.method_is("encode", &inputs)?, "encode")?;
                let IValue::TensorList(context) = context else {
                    return Err(Error::Inference(format!("encode: first output {context:?}, expected a list of tensors")));
                };
                drop(_guard);
                Ok((self.integrate(spec, context, batch)?, extras))
            }
        }
    }

    /// The chunk of a flow-matching policy: its velocity integrated (by
    /// `policy::flow`) from the noise of `seed`, the same for every element; the first
    /// `action_names` columns of the result.
    fn integrate(&self, spec: FlowSpec, context: Vec<Tensor>, batch: &Batch<'_>) -> Result<Tensor> {
        let (t, a) = (self.meta.chunk_length, self.meta.action_names.len());
        let width = spec.width(a);
        let noise = gaussian(batch.seed, t * width);
        let shape = [batch.size as i64, t as i64, width as i64];
        let mut field = TorchField { module: &self.module, context, shape, device: self.device };
        let x = flow::integrate(&mut field, noise.repeat(batch.size), spec, t, batch.inpainting)?;
        Ok(Tensor::from_slice(&x).view(shape).narrow(2, 0, a as i64))
    }

    /// `batch`'s outputs in the node's units.
    fn forward(&self, batch: &Batch<'_>) -> Result<Vec<PolicyOutput>> {
        let m = &self.meta;
        let (actions, extras) = self.run(batch)?;
        let (b, t, a) = (batch.size, m.chunk_length, m.action_names.len());
        let l = batch.tokens.get(0).ids.len();
        let [rows, cols] = m.patch_grid;
        let actions = take_f32(actions, "actions", &[b as i64, t as i64, a as i64])?;
        let weights = match (m.outputs.token_weights, extras.token_weights) {
            (true, Some(w)) => take_f32(w, "token_weights", &[b as i64, l as i64])?,
            (true, None) => return Err(Error::Inference("token_weights missing from the outputs".into())),
            _ => Vec::new(),
        };
        let maps = match (m.outputs.patch_maps, extras.patch_maps) {
            (true, Some(p)) => take_f32(p, "patch_maps", &[b as i64, m.cameras.len() as i64, rows as i64, cols as i64])?,
            (true, None) => return Err(Error::Inference("patch_maps missing from the outputs".into())),
            _ => Vec::new(),
        };
        let n = &m.normalization;
        let per = |v: &[f32], i: usize| if v.is_empty() { Vec::new() } else { v[i * v.len() / b..(i + 1) * v.len() / b].to_vec() };
        Ok((0..b)
            .map(|i| PolicyOutput {
                actions: actions[i * t * a..(i + 1) * t * a]
                    .chunks_exact(a)
                    .map(|row| row.iter().zip(n.action_mean.iter().zip(&n.action_std)).map(|(x, (mu, sd))| f64::from(*x) * sd + mu).collect())
                    .collect(),
                token_weights: per(&weights, i),
                patch_maps: per(&maps, i),
            })
            .collect())
    }
}

/// A policy's `velocity` method at one batch's context, for `policy::flow`.
struct TorchField<'m> {
    module: &'m CModule,
    context: Vec<Tensor>,
    shape: [i64; 3],
    device: tch::Device,
}

impl TorchField<'_> {
    fn call(&self, x: &Tensor, t: f32) -> Result<Tensor> {
        let tt = Tensor::full([self.shape[0]], f64::from(t), (Kind::Float, self.device));
        let context = IValue::TensorList(self.context.iter().map(Tensor::shallow_clone).collect());
        match self.module.method_is("velocity", &[IValue::Tensor(x.shallow_clone()), IValue::Tensor(tt), context])? {
            IValue::Tensor(v) if v.size() == self.shape => Ok(v),
            IValue::Tensor(v) => Err(Error::Inference(format!("velocity: shape {:?}, expected {:?}", v.size(), self.shape))),
            other => Err(Error::Inference(format!("velocity returned {other:?}, expected a tensor"))),
        }
    }

    fn tensor(&self, x: &[f32]) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(x)?.view(self.shape).to_device(self.device))
    }
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    let t = t.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous();
    let mut out = vec![0f32; t.numel()];
    t.f_copy_data(&mut out, t.numel())?;
    Ok(out)
}

impl VelocityField for TorchField<'_> {
    fn velocity(&mut self, x: &[f32], t: f32) -> Result<Vec<f32>> {
        let _guard = tch::no_grad_guard();
        to_vec(&self.call(&self.tensor(x)?, t)?)
    }

    /// The product through autograd: the gradient of `sum(cotangent * v)` at `x`.
    fn velocity_vjp(&mut self, x: &[f32], t: f32, cotangent: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let x = self.tensor(x)?.set_requires_grad(true);
        let v = self.call(&x, t)?;
        let objective = (&v * self.tensor(cotangent)?).sum(Kind::Float);
        let grad = Tensor::f_run_backward(&[&objective], &[&x], false, false)?;
        let grad = grad.into_iter().next().ok_or_else(|| Error::Inference("velocity has no gradient with respect to x_t".into()))?;
        Ok((to_vec(&v.detach())?, to_vec(&grad)?))
    }
}

/// The optional outputs of one inference.
#[derive(Default)]
struct Extras {
    token_weights: Option<IValue>,
    patch_maps: Option<IValue>,
}

/// Version 1's `(actions, token_weights, patch_maps)`.
fn split_v1(out: IValue) -> Result<(Tensor, Extras)> {
    let IValue::Tuple(parts) = out else {
        return Err(Error::Inference(format!("forward returned {out:?}, expected a tuple of 3 tensors")));
    };
    let Ok([actions, weights, maps]) = <[IValue; 3]>::try_from(parts) else {
        return Err(Error::Inference("forward returned a tuple of the wrong length, expected 3".into()));
    };
    let IValue::Tensor(actions) = actions else { return Err(Error::Inference(format!("actions: expected a tensor, got {actions:?}"))) };
    Ok((actions, Extras { token_weights: Some(weights), patch_maps: Some(maps) }))
}

/// Version 2's `(first, {name: tensor})`: the chunk of `forward`, or the context list of
/// `encode`, and the optional outputs.
fn split_v2(out: IValue, method: &str) -> Result<(IValue, Extras)> {
    let IValue::Tuple(parts) = out else {
        return Err(Error::Inference(format!("{method} returned {out:?}, expected a tuple (tensor, dict)")));
    };
    let Ok([first, dict]) = <[IValue; 2]>::try_from(parts) else {
        return Err(Error::Inference(format!("{method} returned a tuple of the wrong length, expected 2")));
    };
    let mut extras = Extras::default();
    match dict {
        IValue::GenericDict(entries) => {
            for (k, v) in entries {
                match k {
                    IValue::String(k) if k == "token_weights" => extras.token_weights = Some(v),
                    IValue::String(k) if k == "patch_maps" => extras.patch_maps = Some(v),
                    _ => {}
                }
            }
        }
        other => return Err(Error::Inference(format!("{method}: second output {other:?}, expected a dict of tensors"))),
    }
    Ok((first, extras))
}

impl PolicyRunner for TorchPolicy {
    fn meta(&self) -> &PolicyMeta {
        &self.meta
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    fn infer_batch(&self, batch: &Batch<'_>, priority: Priority) -> Result<Vec<PolicyOutput>> {
        self.gate.run(priority, || self.forward(batch))
    }
}

/// A method of the module that returns a string (`metadata`, a tokenizer's JSON).
fn call_string(module: &CModule, method: &str) -> std::result::Result<String, String> {
    match module.method_is::<IValue>(method, &[]) {
        Ok(IValue::String(s)) => Ok(s),
        Ok(other) => Err(format!("{method}() returned {other:?}, expected a string")),
        Err(e) => Err(format!("no {method}() method: {}", first_line(&e.to_string()))),
    }
}

/// A Hugging Face tokenizer's `tokenizer.json`: the file beside the policy, or the text
/// of the policy's method.
fn hf_json(module: &CModule, path: &Path, spec: &TokenizerSpec) -> std::result::Result<Option<String>, String> {
    let TokenizerSpec::Hf(hf) = spec else { return Ok(None) };
    match (&hf.file, &hf.method) {
        (Some(file), None) => {
            let p = path.parent().unwrap_or(Path::new(".")).join(file);
            std::fs::read_to_string(&p).map(Some).map_err(|e| format!("tokenizer file {}: {e}", p.display()))
        }
        (None, Some(method)) => call_string(module, method).map(Some),
        _ => Err("a Hugging Face tokenizer names either its `file` or its `method`".into()),
    }
}

/// A tensor output (or an `IValue` that must be one) as f32 values of `shape`.
fn take_f32(v: impl Into<IValue>, name: &str, shape: &[i64]) -> Result<Vec<f32>> {
    let v = v.into();
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
