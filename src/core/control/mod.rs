//! From action chunks to commands: [`smoothing`] blends asynchronous chunks into one
//! action per control tick, [`safety`] is the last gate before a command leaves.

pub mod safety;
pub mod smoothing;
