//! The one error type of the library. Variants carry the offending values so that a
//! message in the log says what was wrong without a debugger.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter has the wrong type or an invalid value.
    #[error("parameter `{name}` = {value}: {reason}")]
    Param {
        name: String,
        value: String,
        reason: String,
    },

    /// The policy file could not be read or is not a valid TorchScript module.
    #[error("policy `{path}`: {reason}")]
    PolicyLoad { path: PathBuf, reason: String },

    /// The policy's metadata does not match the node's configuration.
    #[error("policy `{path}` does not match the configuration:\n  - {}", differences.join("\n  - "))]
    PolicyMismatch {
        path: PathBuf,
        differences: Vec<String>,
    },

    /// A forward pass failed or returned outputs that break the contract.
    #[error("policy inference: {0}")]
    Inference(String),

    /// An input message was rejected; the reason is what gets counted in diagnostics.
    #[error("{topic}: {reason}")]
    Rejected { topic: String, reason: String },

    /// A rosbag2 recording could not be read or written.
    #[error("bag `{path}`: {reason}")]
    Bag { path: PathBuf, reason: String },

    /// The robot description (URDF) cannot give the joint limits: unreadable, or its
    /// joints do not match `joint_names`.
    #[error("robot_description {0}")]
    RobotDescription(String),

    /// The requested compute device is not available.
    #[error("device `{requested}` is not available: {reason}")]
    Device { requested: String, reason: String },
}

impl Error {
    pub fn param(name: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        Error::Param {
            name: name.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub fn bag(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        Error::Bag { path: path.to_owned(), reason: reason.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
