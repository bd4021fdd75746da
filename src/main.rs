//! The `vla_controller` binary.
//!
//! - `vla_controller --ros-args --params-file config/controller.yaml`: the node;
//! - `vla_controller inspect ...`: explanations of one input without a robot;
//! - `vla_controller replay INPUT -o OUTPUT`: a recorded bag through the pipeline;
//! - `vla_controller compare NEW OLD`: two replay outputs against each other.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "vla_controller inspect", about = "Explain one input without a robot")]
struct Inspect {
    #[command(flatten)]
    args: vla_controller::inspect::InspectArgs,
}

#[derive(Parser)]
#[command(name = "vla_controller replay", about = "Replay a rosbag2 recording through the pipeline into a new bag")]
struct Replay {
    #[command(flatten)]
    args: vla_controller::replay::ReplayArgs,
}

#[derive(Parser)]
#[command(name = "vla_controller compare", about = "Compare the commands of two replay outputs")]
struct Compare {
    #[command(flatten)]
    args: vla_controller::replay::CompareArgs,
}

fn main() -> ExitCode {
    vla_controller::memory::keep_freed_memory();
    // stderr until the node exists, then rcl's logging (/rosout, console, log file).
    vla_controller::rosout::install();
    // Anything but a subcommand is the node, whose arguments belong to rcl (--ros-args).
    let result = match std::env::args().nth(1).as_deref() {
        Some("inspect") => {
            let cli = Inspect::parse_from(std::env::args().skip(1));
            vla_controller::inspect::run(cli.args)
        }
        // Both write their report either way; a damaged input, a missing topic or a
        // deviation beyond the tolerance makes the exit status 1.
        Some("replay") => vla_controller::replay::run(Replay::parse_from(std::env::args().skip(1)).args)
            .and_then(|clean| if clean { Ok(()) } else { Err(anyhow::anyhow!("replay finished with the errors above")) }),
        Some("compare") => vla_controller::replay::run_compare(Compare::parse_from(std::env::args().skip(1)).args)
            .and_then(|within| if within { Ok(()) } else { Err(anyhow::anyhow!("commands differ beyond the tolerance")) }),
        Some("--help" | "-h") => {
            println!(
                "vla_controller: ROS 2 node running a vision-language-action policy\n\n\
                 usage:\n  vla_controller --ros-args --params-file config/controller.yaml [-r from:=to] [-p name:=value]\n  \
                 vla_controller inspect --help\n  vla_controller replay --help\n  vla_controller compare --help"
            );
            Ok(())
        }
        _ => vla_controller::node::run(),
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
