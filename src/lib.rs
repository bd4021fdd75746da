//! vla_controller: a ROS 2 node that runs vision-language-action policies and explains
//! them. The parts, from the inside out:
//!
//! - [`core`]: the pipeline without ROS, libtorch or files (configuration, inputs,
//!   synchronization, smoothing and safety, the policy contract, counters, topic names);
//! - [`policy`]: running a policy: the [`policy::PolicyRunner`] trait, the TorchScript
//!   runner (feature `torch`) and a fake one for tests;
//! - [`explain`]: occlusion attribution and the pictures for RViz;
//! - [`driver`]: one camera set through inference, chunk and explanation to outputs as
//!   values, for the node and the replay alike;
//! - [`bag`]: rosbag2 files read and written without ROS tooling;
//! - [`ros`] (feature `ros`): the r2r node, messages and parameters;
//! - [`cli`] (features `ros` and `torch`): replay, compare and inspect.
//!
//! `cargo test --no-default-features --lib` runs every test of the parts that need
//! neither a ROS prefix nor libtorch.

pub mod bag;
#[cfg(all(feature = "ros", feature = "torch"))]
pub mod cli;
pub mod core;
pub mod driver;
pub mod error;
pub mod explain;
pub mod memory;
pub mod policy;
#[cfg(feature = "ros")]
pub mod ros;

pub use error::{Error, Result};
