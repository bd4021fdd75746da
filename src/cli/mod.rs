//! The commands besides the node: `replay` (a recording through the node's driver into a
//! new bag), `compare` (two replay outputs against each other), `inspect` (explanations
//! of one input without a robot) and `tokenize` (instructions as the policy reads them).

pub mod accounting;
pub mod compare;
pub mod inspect;
pub mod replay;
pub mod tokenize;
