//! `vla_controller compare`: the commands of two replay outputs against each other, as a
//! regression test of a policy or a change of parameters.

use std::path::{Path, PathBuf};

use anyhow::bail;
use r2r::{std_msgs::msg::Float64MultiArray, trajectory_msgs::msg::JointTrajectory};

use crate::bag::BagReader;
use crate::core::topics::{self, OutputTopic};
use crate::ros::msgs::from_cdr;

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The new output bag.
    pub new: PathBuf,
    /// The previous output bag, the reference.
    pub old: PathBuf,
    /// Largest allowed deviation of any joint command.
    #[arg(long, default_value_t = 1e-6)]
    pub tolerance: f64,
}

/// Commands of an output bag, in order: (time, positions).
fn commands(path: &Path) -> anyhow::Result<Vec<(i64, Vec<f64>)>> {
    let topic = OutputTopic::Commands.absolute(&[]);
    let mut out = Vec::new();
    for m in BagReader::open(path)? {
        let m = m?;
        if m.topic != topic {
            continue;
        }
        let positions = match m.type_name.as_str() {
            topics::FLOAT64_ARRAY_TYPE => from_cdr::<Float64MultiArray>(&m.data)?.data,
            topics::TRAJECTORY_TYPE => from_cdr::<JointTrajectory>(&m.data)?
                .points
                .into_iter()
                .next()
                .map(|p| p.positions)
                .unwrap_or_default(),
            other => bail!("{}: {topic} has type {other}", path.display()),
        };
        out.push((m.log_time, positions));
    }
    Ok(out)
}

pub struct Comparison {
    pub within: bool,
    pub report: String,
}

/// Per-joint maximum and mean deviation of the commands of `new` from those of `old`,
/// paired in order, and the first stamp where any joint deviates by more than
/// `tolerance` (or where one bag has a command the other lacks).
pub fn compare(new: &Path, old: &Path, tolerance: f64) -> anyhow::Result<Comparison> {
    let (a, b) = (commands(new)?, commands(old)?);
    let joints = a.first().or(b.first()).map_or(0, |c| c.1.len());
    let (mut max, mut sum) = (vec![0.0f64; joints], vec![0.0f64; joints]);
    let mut first_divergent: Option<i64> = None;
    for ((ta, ca), (tb, cb)) in a.iter().zip(&b) {
        if ca.len() != cb.len() || ta != tb {
            first_divergent.get_or_insert(*ta.min(tb));
            continue;
        }
        for (j, (x, y)) in ca.iter().zip(cb).enumerate() {
            let d = (x - y).abs();
            max[j] = max[j].max(d);
            sum[j] += d;
            if d > tolerance {
                first_divergent.get_or_insert(*ta);
            }
        }
    }
    let paired = a.len().min(b.len());
    if a.len() != b.len() {
        let t = if a.len() > b.len() { a[paired].0 } else { b[paired].0 };
        first_divergent.get_or_insert(t);
    }
    let mut report = format!(
        "compare {} with {}: {} and {} commands, tolerance {tolerance:e}\n",
        new.display(),
        old.display(),
        a.len(),
        b.len()
    );
    for j in 0..joints {
        report += &format!("  joint {j}: max deviation {:.3e}, mean {:.3e}\n", max[j], sum[j] / paired.max(1) as f64);
    }
    let within = first_divergent.is_none();
    match first_divergent {
        None => report += "  within tolerance\n",
        Some(t) => report += &format!("  DIVERGES: first at stamp {t} ns ({}.{:09} s)\n", t.div_euclid(1_000_000_000), t.rem_euclid(1_000_000_000)),
    }
    Ok(Comparison { within, report })
}

pub fn run(args: CompareArgs) -> anyhow::Result<bool> {
    let c = compare(&args.new, &args.old, args.tolerance)?;
    print!("{}", c.report);
    Ok(c.within)
}
