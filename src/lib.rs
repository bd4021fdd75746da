//! vla_controller: a ROS 2 node that runs vision-language-action policies.
//!
//! The parts, from input to output:
//! - [`image`]: sensor_msgs/Image fields to the policy's RGB input;
//! - [`sync`]: ApproximateTime synchronization of the cameras;
//! - [`joints`]: joint states matched by name, paired by stamp;
//! - [`tokenizer`]: the policy's character tokenizer;
//! - [`policy`]: the TorchScript policy through libtorch and its contract;
//! - [`smoothing`]: action chunks to one action per control tick;
//! - [`safety`]: limits, step bound and finite check on every command;
//! - [`core`]: all of the above as one ROS-free pipeline, driven by the node and tests;
//! - [`node`]: the r2r adapter; [`rosout`]: its log lines through rcl's logging;
//! - [`config`], [`stats`], [`error`], [`memory`]: parameters, counters, the error type,
//!   allocator settings.

pub mod bag;
pub mod config;
pub mod core;
pub mod error;
pub mod explain;
pub mod image;
pub mod inspect;
pub mod joints;
pub mod memory;
pub mod node;
pub mod policy;
pub mod replay;
pub mod ros_msgs;
pub mod rosout;
pub mod safety;
pub mod smoothing;
pub mod stats;
pub mod sync;
pub mod tokenizer;

pub use error::{Error, Result};
