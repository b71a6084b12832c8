//! `whisk serve`: the OpenAI-compatible server (`whisk-server`) over one model.

use std::time::Duration;

use anyhow::{bail, Result};

use crate::{compute_type, model_builder};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (CTranslate2 or Hugging Face layout), or a Hugging Face model
    /// (`tiny.en`, `openai/whisper-base`) fetched into the hub cache.
    #[arg(long, short)]
    model: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Windows decoded together within one transcription.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Hypotheses kept by the beam search at temperature 0; 1 decodes greedily.
    #[arg(long, default_value_t = 5)]
    beam_size: usize,
    /// Requests waiting for the decoder are decoded together, up to this many (1: one at a
    /// time).
    #[arg(long, default_value_t = 16)]
    max_batched_requests: usize,
    /// Requests of up to 30 s batched together share windows: several times fewer encoder
    /// passes, but a request's text can then depend on what else arrived.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pack: bool,
    /// Clients must send `Authorization: Bearer <key>` (default: $WHISK_API_KEY; none: open).
    #[arg(long)]
    api_key: Option<String>,
    /// Largest upload, in MiB (enforced while it streams in: 413 beyond).
    #[arg(long, default_value_t = 25)]
    max_upload_mb: usize,
    /// Requests admitted at once, decoding or waiting; more are answered 503.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// A request not answered after this many seconds gets 503.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    /// The model's name in `/v1/models` (requests may name any).
    #[arg(long, default_value = "whisper-1")]
    model_name: String,
    /// Tensor library: candle or burn (each must be compiled in; see the cargo features).
    #[arg(long)]
    backend: Option<String>,
    /// cpu, cuda, cuda:N, metal (candle) or wgpu (burn). Default: the backend's CPU device.
    #[arg(long)]
    device: Option<String>,
    /// Number type of the computation, as `whisk transcribe --compute-type`.
    #[arg(long, default_value = "auto", value_parser = compute_type)]
    compute_type: whisk::ComputeType,
}

pub fn run(args: &Args) -> Result<()> {
    if [
        args.batch_size,
        args.beam_size,
        args.max_batched_requests,
        args.max_queue,
        args.max_upload_mb,
    ]
    .contains(&0)
    {
        bail!("--batch-size, --beam-size, --max-batched-requests, --max-queue and --max-upload-mb must be at least 1");
    }
    let model = model_builder(&args.model, args.backend.as_deref(), args.device.as_deref())?
        .compute_type(args.compute_type)
        .build()?;
    let config = whisk_server::Config {
        host: args.host.clone(),
        port: args.port,
        model_name: args.model_name.clone(),
        batch_size: args.batch_size,
        beam_size: args.beam_size,
        max_batched_requests: args.max_batched_requests,
        pack_requests: args.pack,
        api_key: args
            .api_key
            .clone()
            .or_else(|| std::env::var("WHISK_API_KEY").ok())
            .filter(|k| !k.is_empty()),
        max_upload_bytes: args.max_upload_mb << 20,
        max_queued: args.max_queue,
        request_timeout: Duration::from_secs(args.timeout_seconds),
    };
    whisk_server::run(model, config)?;
    Ok(())
}
