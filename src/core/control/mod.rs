//! From action chunks to commands: [`smoothing`] blends asynchronous chunks into one
//! action per control tick, [`rtc`] keeps the running plan for real-time chunking,
//! [`safety`] is the last gate before a command leaves, with the [`limits`] of the
//! parameters file or the robot description.

pub mod limits;
pub mod rtc;
pub mod safety;
pub mod smoothing;
