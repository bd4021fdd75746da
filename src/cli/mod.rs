//! The commands besides the node: `replay` (a recording through the node's driver into a
//! new bag), `compare` (two replay outputs against each other) and `inspect`
//! (explanations of one input without a robot).

pub mod accounting;
pub mod compare;
pub mod inspect;
pub mod replay;
