//! `whisk bench-synthetic` (hidden): a device's throughput on random weights of an official
//! model's shape, for GPU checks where the real weights cannot be carried. Prints JSON.

use anyhow::{Context, Result};
use whisk::synthetic::{SyntheticOptions, SyntheticResult};
use whisk::{BackendKind, ComputeType, Device, ModelDims};

#[derive(clap::Args)]
pub struct Args {
    /// The shape: tiny, tiny.en, base, small, medium, large-v2, large-v3, large-v3-turbo.
    #[arg(long, default_value = "large-v3")]
    dims: String,
    #[arg(long, default_value = "candle")]
    backend: String,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "default", value_parser = crate::compute_type)]
    compute_type: ComputeType,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,8", value_delimiter = ',')]
    batches: Vec<usize>,
    /// Decoder steps per window (a 30 s window of speech takes about 100).
    #[arg(long, default_value_t = 100)]
    tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: &Args) -> Result<()> {
    let dims = ModelDims::official(&args.dims)
        .with_context(|| format!("unknown model shape `{}`", args.dims))?;
    let options = SyntheticOptions {
        dims,
        backend: args
            .backend
            .parse::<BackendKind>()
            .map_err(anyhow::Error::msg)?,
        device: args.device.parse::<Device>().map_err(anyhow::Error::msg)?,
        compute_type: args.compute_type,
        batches: args.batches.clone(),
        tokens: args.tokens,
        seed: args.seed,
    };
    let report = whisk::synthetic::run(&options)?;
    let row = |r: &SyntheticResult| {
        serde_json::json!({
            "batch": r.batch,
            "words": r.words,
            "tokens": r.tokens,
            "encode_s": r.encode_seconds,
            "decode_s": r.decode_seconds,
            "realtime_factor": r.realtime_factor(),
        })
    };
    let json = serde_json::json!({
        "dims": args.dims,
        "device": report.device_name,
        "compute_type": args.compute_type.resolved().name(),
        "load_s": report.load_seconds,
        "results": report.results.iter().map(row).collect::<Vec<_>>(),
    });
    println!("{json}");
    Ok(())
}
