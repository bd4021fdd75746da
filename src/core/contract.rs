//! The policy contract (docs/POLICY_CONTRACT.md) as the node reads it: a policy's
//! metadata, and every way in which it can disagree with the contract or with the
//! node's configuration.

use serde::Deserialize;

use crate::core::config::Config;
use crate::core::inputs::tokenizer::{CharTokenizer, TokenizerSpec};

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
    /// `cfg` with the cameras, joints and rate this policy was made for: what a command
    /// that adapts to the policy (inspect) runs with.
    pub fn fitted(&self, cfg: &Config) -> Config {
        Config {
            camera_names: self.camera_names.clone(),
            joint_names: self.joint_names.clone(),
            control_rate_hz: self.control_rate_hz,
            ..cfg.clone()
        }
    }

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

