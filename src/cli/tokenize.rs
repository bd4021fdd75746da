//! `vla_controller tokenize`: what the node makes of instructions, token by token, with
//! a policy's tokenizer or a `tokenizer.json` file. One instruction per input line, as a
//! JSON string (so that any text, newlines included, can be given); one JSON object per
//! output line: `ids`, `mask`, `pieces`, `truncated`, `unknown`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context as _};

use crate::core::config::Device;
use crate::core::inputs::tokenizer::{HfTokenizer, Tokenizer};
use crate::policy::torch::TorchPolicy;
use crate::policy::PolicyRunner;

#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    /// The policy whose tokenizer to use.
    #[arg(long, conflicts_with = "tokenizer")]
    pub policy: Option<PathBuf>,
    /// A Hugging Face tokenizer.json instead.
    #[arg(long, requires = "max_length")]
    pub tokenizer: Option<PathBuf>,
    /// With --tokenizer: tokens per instruction.
    #[arg(long)]
    pub max_length: Option<usize>,
    /// With --tokenizer: the padding id.
    #[arg(long, default_value_t = 0)]
    pub pad_id: i64,
}

pub fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    let tokenizer = match (&args.policy, &args.tokenizer) {
        (Some(p), None) => {
            let policy = TorchPolicy::load(p, Device::Cpu)?;
            policy.tokenizer().cloned().with_context(|| format!("{}: the policy takes no instruction", p.display()))?
        }
        (None, Some(t)) => {
            let json = std::fs::read_to_string(t).with_context(|| format!("reading {}", t.display()))?;
            let max_length = args.max_length.context("--tokenizer needs --max-length")?;
            Tokenizer::Hf(HfTokenizer::new(&json, max_length, args.pad_id).map_err(anyhow::Error::msg)?)
        }
        _ => bail!("give --policy or --tokenizer"),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let text: String = serde_json::from_str(&line).with_context(|| format!("line {}: expected a JSON string", i + 1))?;
        let t = tokenizer.encode(&text);
        let json = serde_json::json!({"ids": t.ids, "mask": t.mask, "pieces": t.pieces, "truncated": t.truncated, "unknown": t.unknown});
        writeln!(out, "{json}")?;
    }
    Ok(())
}
