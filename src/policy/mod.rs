//! Policies: what the node knows of one ([`PolicyMeta`], read from the policy file and
//! checked against the contract in docs/POLICY_CONTRACT.md and the configuration), and
//! how it runs one ([`PolicyRunner`]). The TorchScript runner ([`torch`], libtorch
//! through tch) is behind the `torch` feature; [`fake`] is a deterministic runner for
//! tests and benchmarks of everything around the policy.

pub mod fake;
#[cfg(feature = "torch")]
pub mod torch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use crate::core::contract::{Normalization, PolicyMeta};
use crate::core::config::Config;
use crate::core::inputs::tokenizer::{CharTokenizer, Tokens};
use crate::error::Result;

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

impl PolicyOutput {
    /// The output, unless its chunk holds a non-finite action: that would poison every
    /// blended command it takes part in, so the whole chunk is refused and the node holds.
    pub fn finite(self) -> Result<Self> {
        match self.actions.iter().flatten().enumerate().find(|(_, v)| !v.is_finite()) {
            Some((i, v)) => Err(crate::error::Error::Inference(format!("policy returned a non-finite action ({v} at index {i})"))),
            None => Ok(self),
        }
    }
}

/// Who asks for a forward pass: the control path goes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// An inference whose chunk the arm waits for.
    Control,
    /// Work that can wait (occlusion batches): it yields to every control inference.
    Background,
}

/// Runs a policy. Implementations are shared between the inference thread and the
/// explanation thread; [`ForwardGate`] orders their forward passes.
pub trait PolicyRunner: Send + Sync {
    fn meta(&self) -> &PolicyMeta;

    /// The policy's tokenizer.
    fn tokenizer(&self) -> &CharTokenizer;

    /// `batch` observations that share state and instruction (occlusion attribution
    /// runs many copies of one frame). `images` holds each observation's cameras, RGB at
    /// the policy's size in camera order, one observation after the other; `state` the
    /// joint positions in the policy's joint order.
    fn infer_batch(&self, images: &[u8], batch: usize, state: &[f64], tokens: &Tokens, priority: Priority) -> Result<Vec<PolicyOutput>>;

    /// One forward pass on the control path.
    fn infer(&self, images: &[u8], state: &[f64], tokens: &Tokens) -> Result<PolicyOutput> {
        let mut out = self.infer_batch(images, 1, state, tokens, Priority::Control)?;
        // One output per batch element is the runner's promise, not something checked
        // here: a runner that breaks it fails the inference rather than the node.
        out.pop().ok_or_else(|| crate::error::Error::Inference("no output for a batch of one".into()))
    }

    /// Bytes of one observation's images: cameras x height x width x 3.
    fn image_len(&self) -> usize {
        let m = self.meta();
        m.camera_names.len() * m.image_height * m.image_width * 3
    }
}

/// One forward pass at a time, and the control path's first: background work waits
/// while an inference wants the policy, so an inference waits at most for the one batch
/// already running.
#[derive(Debug, Default)]
pub struct ForwardGate {
    busy: Mutex<()>,
    urgent: AtomicUsize,
}

impl ForwardGate {
    /// Runs `forward` when it is `priority`'s turn.
    pub fn run<T>(&self, priority: Priority, forward: impl FnOnce() -> T) -> T {
        match priority {
            Priority::Control => {
                self.urgent.fetch_add(1, Ordering::AcqRel);
                let guard = self.busy.lock().unwrap_or_else(|e| e.into_inner());
                self.urgent.fetch_sub(1, Ordering::AcqRel);
                let out = forward();
                drop(guard);
                out
            }
            Priority::Background => loop {
                while self.urgent.load(Ordering::Acquire) > 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                let guard = self.busy.lock().unwrap_or_else(|e| e.into_inner());
                if self.urgent.load(Ordering::Acquire) > 0 {
                    continue; // an inference arrived meanwhile: let it go first
                }
                let out = forward();
                drop(guard);
                return out;
            },
        }
    }
}

/// Which checks [`load`] makes besides the contract's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckAgainst {
    /// The node's configuration: cameras, joints and rate must match (node, replay).
    Config,
    /// Only the contract: the configuration adapts to the policy (inspect).
    ContractOnly,
}

/// Loads the policy `cfg` names on `cfg`'s device, checks it (see [`CheckAgainst`]) and
/// runs one inference on zero inputs, so that a policy that would fail later fails now.
/// The one way every command (node, replay, inspect, benchmarks) gets its policy.
#[cfg(feature = "torch")]
pub fn load(cfg: &Config, against: CheckAgainst) -> Result<torch::TorchPolicy> {
    torch::set_torch_threads(cfg.torch_threads);
    let policy = torch::TorchPolicy::load(&cfg.policy_path, cfg.device)?;
    let cfg = match against {
        CheckAgainst::Config => cfg.clone(),
        CheckAgainst::ContractOnly => policy.meta().fitted(cfg),
    };
    check(&policy, &cfg, &cfg.policy_path)?;
    let m = policy.meta();
    tracing::info!(
        policy = m.name,
        path = %cfg.policy_path.display(),
        device = %cfg.device,
        chunk_length = m.chunk_length,
        input = format!("{}x{}", m.image_width, m.image_height),
        "policy loaded and checked"
    );
    Ok(policy)
}

/// Compares the metadata with the configuration, then runs one forward pass on zero
/// inputs and checks the outputs' shapes.
pub fn check(policy: &dyn PolicyRunner, cfg: &Config, path: &std::path::Path) -> Result<()> {
    use crate::error::Error;
    let differences = policy.meta().differences(cfg);
    if !differences.is_empty() {
        return Err(Error::PolicyMismatch { path: path.to_owned(), differences });
    }
    let images = vec![0u8; policy.image_len()];
    let tokens = policy.tokenizer().encode("");
    policy.infer(&images, &vec![0.0; policy.meta().action_dim], &tokens).map_err(|e| Error::PolicyMismatch {
        path: path.to_owned(),
        differences: vec![format!("a forward pass on zero inputs failed: {e}")],
    })?;
    Ok(())
}
