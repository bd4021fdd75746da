//! Policies: what the node knows of one ([`PolicyMeta`], read from the policy file and
//! checked against the contract in docs/POLICY_CONTRACT.md and the configuration), and
//! how it runs one ([`PolicyRunner`]). The TorchScript runner ([`torch`], libtorch
//! through tch) is behind the `torch` feature; [`fake`] is a deterministic runner for
//! tests and benchmarks of everything around the policy.

pub mod fake;
pub mod flow;
pub mod noise;
#[cfg(feature = "torch")]
pub mod torch;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use crate::core::contract::{Normalization, PolicyMeta};
use crate::core::config::Config;
use crate::core::inputs::tokenizer::{Tokenizer, Tokens};
use crate::error::Result;

/// What one inference gives back for one batch element, in the node's units.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutput {
    /// `chunk_length` actions, each in the policy's `action_names` order (absolute or
    /// delta, as its `action_mode` says), de-normalized.
    pub actions: Vec<Vec<f64>>,
    /// One weight per token slot (`max_length`), 0 on padding; empty when the policy
    /// returns none.
    pub token_weights: Vec<f32>,
    /// Cameras x rows x cols, row-major; empty when the policy returns none.
    pub patch_maps: Vec<f32>,
}

/// The instruction of each element of a batch.
#[derive(Debug, Clone, Copy)]
pub enum BatchTokens<'a> {
    /// One instruction for all (image occlusion).
    Shared(&'a Tokens),
    /// One per element (token occlusion).
    Each(&'a [Tokens]),
}

impl BatchTokens<'_> {
    pub fn get(&self, i: usize) -> &Tokens {
        match self {
            BatchTokens::Shared(t) => t,
            BatchTokens::Each(v) => &v[i],
        }
    }
}

/// The inputs of one batched inference: `size` observations that share the state.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Each observation's images (every camera at its input size, camera after camera),
    /// observation after observation.
    pub images: &'a [u8],
    pub size: usize,
    /// The policy's state, its `state_names` order, not normalized.
    pub state: &'a [f64],
    pub tokens: BatchTokens<'a>,
    /// Seed of the noise a flow-matching policy starts from; every element of the batch
    /// starts from the same noise, so that only the inputs tell them apart.
    pub seed: u64,
    /// Real-time chunking's inpainting of a flow-matching policy's chunk.
    pub inpainting: Option<&'a flow::Inpainting>,
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

    /// The policy's tokenizer; None when it takes no instruction.
    fn tokenizer(&self) -> Option<&Tokenizer>;

    /// One inference of a batch (occlusion attribution runs many copies of one frame),
    /// when `priority`'s turn comes: one output per element, in order.
    fn infer_batch(&self, batch: &Batch<'_>, priority: Priority) -> Result<Vec<PolicyOutput>>;

    /// One inference on the control path.
    fn infer(&self, images: &[u8], state: &[f64], tokens: &Tokens, seed: u64) -> Result<PolicyOutput> {
        let batch = Batch { images, size: 1, state, tokens: BatchTokens::Shared(tokens), seed, inpainting: None };
        let mut out = self.infer_batch(&batch, Priority::Control)?;
        // One output per batch element is the runner's promise, not something checked
        // here: a runner that breaks it fails the inference rather than the node.
        out.pop().ok_or_else(|| crate::error::Error::Inference("no output for a batch of one".into()))
    }

    /// Bytes of one observation's images.
    fn image_len(&self) -> usize {
        self.meta().image_len()
    }
}

/// The batch's input sizes against the policy's, as the error a runner returns.
pub fn check_sizes(meta: &PolicyMeta, batch: &Batch<'_>) -> Result<()> {
    let expected = batch.size * meta.image_len();
    if batch.images.len() != expected || batch.state.len() != meta.state_names.len() || batch.size == 0 {
        return Err(crate::error::Error::Inference(format!(
            "input sizes: {} image bytes for batch {} (expected {expected}), {} state values (expected {})",
            batch.images.len(),
            batch.size,
            batch.state.len(),
            meta.state_names.len()
        )));
    }
    Ok(())
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
        contract = m.contract_version,
        cameras = ?m.cameras.iter().map(|c| format!("{} {}x{} {:?}", c.name, c.width, c.height, c.resize)).collect::<Vec<_>>(),
        language = m.tokenizer.is_some(),
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
    let tokens = policy.tokenizer().map(|t| t.encode("")).unwrap_or_default();
    let out = policy.infer(&images, &vec![0.0; policy.meta().state_names.len()], &tokens, 0);
    out.map_err(|e| Error::PolicyMismatch {
        path: path.to_owned(),
        differences: vec![format!("a forward pass on zero inputs failed: {e}")],
    })?;
    Ok(())
}
