//! The `vla_controller` binary: parses its command line, sets up logging and hands over
//! to the library.
//!
//! - `vla_controller --ros-args --params-file config/controller.yaml`: the node;
//! - `vla_controller inspect ...`: explanations of one input without a robot;
//! - `vla_controller replay INPUT -o OUTPUT`: a recorded bag through the pipeline;
//! - `vla_controller compare NEW OLD`: two replay outputs against each other;
//! - `vla_controller tokenize --policy P`: instructions (JSON lines) as the policy reads them.

#[cfg(not(all(feature = "ros", feature = "torch")))]
compile_error!("the node needs the features `ros` and `torch` (the default); the core alone builds with `cargo test --no-default-features --lib`");

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use vla_controller::cli::{compare, inspect, replay, tokenize};
use vla_controller::core::config::Config;
use vla_controller::policy::{self, CheckAgainst};
use vla_controller::ros::{self, RosNode};

#[derive(Parser)]
#[command(name = "vla_controller inspect", about = "Explain one input without a robot")]
struct Inspect {
    #[command(flatten)]
    args: inspect::InspectArgs,
}

#[derive(Parser)]
#[command(name = "vla_controller replay", about = "Replay a rosbag2 recording through the pipeline into a new bag")]
struct Replay {
    #[command(flatten)]
    args: replay::ReplayArgs,
}

#[derive(Parser)]
#[command(name = "vla_controller compare", about = "Compare the commands of two replay outputs")]
struct Compare {
    #[command(flatten)]
    args: compare::CompareArgs,
}

#[derive(Parser)]
#[command(name = "vla_controller tokenize", about = "Instructions, one JSON string a line, as the policy's tokenizer reads them")]
struct Tokenize {
    #[command(flatten)]
    args: tokenize::TokenizeArgs,
}

const USAGE: &str = "vla_controller: ROS 2 node running a vision-language-action policy\n\n\
     usage:\n  vla_controller --ros-args --params-file config/controller.yaml [-r from:=to] [-p name:=value]\n  \
     vla_controller inspect --help\n  vla_controller replay --help\n  vla_controller compare --help\n  \
     vla_controller tokenize --help";

fn main() -> ExitCode {
    vla_controller::memory::keep_freed_memory();
    // stderr until the node exists, then rcl's logging (/rosout, console, log file).
    ros::rosout::install();
    let args = || std::env::args().skip(1);
    // Anything but a subcommand is the node, whose arguments belong to rcl (--ros-args).
    let result = match std::env::args().nth(1).as_deref() {
        Some("inspect") => inspect::run(Inspect::parse_from(args()).args),
        // Both write their report either way; a damaged input, a missing topic or a
        // deviation beyond the tolerance makes the exit status 1.
        Some("replay") => replay::run(Replay::parse_from(args()).args)
            .and_then(|clean| if clean { Ok(()) } else { Err(anyhow::anyhow!("replay finished with the errors above")) }),
        Some("compare") => compare::run(Compare::parse_from(args()).args)
            .and_then(|within| if within { Ok(()) } else { Err(anyhow::anyhow!("commands differ beyond the tolerance")) }),
        Some("tokenize") => tokenize::run(Tokenize::parse_from(args()).args),
        Some("--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => node(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole chain of causes on one line.
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The node: its parameters read and validated, its policy loaded and checked, then run
/// until SIGINT or SIGTERM.
fn node() -> anyhow::Result<()> {
    let ros = RosNode::create()?;
    let cfg = Config::load(ros.params())?;
    let policy = Arc::new(policy::load(&cfg, CheckAgainst::Config)?);
    ros::run(ros, cfg, policy, shutdown())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        tracing::warn!("cannot listen for SIGTERM; stop the node with SIGINT");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
