//! The ROS 2 adapter (r2r): the live node, its parameters, and the conversion of core
//! values to and from messages, which the bag replay shares.

pub mod msgs;
pub mod native;
pub mod node;
pub mod params;
pub mod publishers;
pub mod rosout;
pub mod threads;

pub use node::{run, RosNode};
