//! The pipeline without ROS, libtorch or files: plain values in, plain values out, so
//! that the live node and the bag replay run the very same code and its tests need
//! neither a ROS prefix nor libtorch.
//!
//! - [`config`]: every parameter, declared once, typed and validated;
//! - [`inputs`]: camera images to the policy's input, joint states by name, the
//!   tokenizer;
//! - [`sync`]: ApproximateTime synchronization of the cameras;
//! - [`control`]: chunks to one action per tick (smoothing), the joint limits (from the
//!   parameters file or a URDF), and the safety filter;
//! - [`contract`]: a policy's metadata, checked against the contract and the
//!   configuration; [`joint_map`]: the robot's joints to the policy's state and actions;
//! - [`pipeline`]: all of the above as one state machine, reporting what it did as
//!   events;
//! - [`stats`]: the counters those events become, and [`window`]: the last seconds of
//!   rates, stamp spreads and latencies;
//! - [`health`]: those windows as one diagnostic status per concern;
//! - [`task`]: one instruction run as a task, until it settles, times out or fails;
//! - [`topics`]: every topic name and message type of the node.

pub mod config;
pub mod contract;
pub mod control;
pub mod health;
pub mod inputs;
pub mod joint_map;
pub mod pipeline;
pub mod stats;
pub mod sync;
pub mod task;
pub mod topics;
pub mod window;
