//! rosbag2 recordings without ROS tooling: reading MCAP and sqlite3 storage, writing MCAP
//! with metadata.yaml. Messages stay CDR bytes here; r2r's (de)serialization turns them
//! into typed messages at the edges.

pub mod msgdef;
pub mod reader;
pub mod writer;

pub use reader::{BagMessage, BagReader};
pub use writer::BagWriter;
