//! `whisk serve`: OpenAI's audio transcription API (`/v1/audio/transcriptions`,
//! `/v1/audio/translations`, `/v1/models`, `/health`) over one loaded model, so that every
//! OpenAI client library talks to whisk by changing its base URL.
//!
//! Requests are admitted up to a bounded queue (beyond it: 503); their audio is decoded from
//! memory (uploads are limited while they stream in: 413), then every request waiting for the
//! decoder joins the next batch (`batcher.rs`), and each is answered as soon as its batch is
//! done.

mod api;
mod batcher;
mod languages;
mod stream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Multipart, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;
use whisk::{Model, Task};

pub use api::{ApiError, ResponseFormat};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// The name `/v1/models` lists; requests may name any model.
    pub model_name: String,
    /// Windows decoded together within one transcription.
    pub batch_size: usize,
    /// Beam width at temperature 0 (1: greedy).
    pub beam_size: usize,
    /// Requests waiting for the decoder are decoded together, up to this many (1: one at a
    /// time).
    pub max_batched_requests: usize,
    /// Requests of up to 30 s batched together share windows: several times fewer encoder
    /// passes, but a request's text can then depend on what else arrived (without it, each
    /// request's answer is the one it gets alone).
    pub pack_requests: bool,
    /// Required as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Largest upload, enforced while the body streams in.
    pub max_upload_bytes: usize,
    /// Requests admitted at once (decoding or waiting); more are answered 503.
    pub max_queued: usize,
    /// A request still waiting or decoding after this long is answered 503.
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8000,
            model_name: "whisper-1".into(),
            batch_size: 8,
            beam_size: 5,
            max_batched_requests: 16,
            pack_requests: false,
            api_key: None,
            max_upload_bytes: 25 << 20,
            max_queued: 64,
            request_timeout: Duration::from_secs(600),
        }
    }
}

struct Shared {
    config: Config,
    /// Admission: one permit per request in the server.
    queue: Arc<Semaphore>,
    batcher: batcher::Batcher,
    /// For streamed requests, decoded beside the batch.
    model: Arc<Model>,
}

/// Seconds of audio a request carried, for its log line.
#[derive(Clone, Copy)]
struct AudioSeconds(f64);

/// The server's routes over `model`.
pub fn router(model: Arc<Model>, config: Config) -> Router {
    let limit = config.max_upload_bytes;
    let shared = Arc::new(Shared {
        queue: Arc::new(Semaphore::new(config.max_queued.max(1))),
        batcher: batcher::Batcher::start(model.clone(), config.max_batched_requests),
        model,
        config,
    });
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/v1/models", get(models))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(shared)
}

/// Serves until Ctrl-C or SIGTERM, then finishes the requests in flight.
pub async fn serve(model: Model, config: Config) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
    let address: SocketAddr = listener.local_addr()?;
    eprintln!(
        "whisk: serving {} ({}) on http://{address}/v1",
        config.model_name,
        model.device_name()
    );
    axum::serve(listener, router(Arc::new(model), config))
        .with_graceful_shutdown(shutdown_signal())
        .await
}

/// [`serve`] on a runtime of its own, for the CLI.
pub fn run(model: Model, config: Config) -> std::io::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(model, config))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    eprintln!("whisk: shutting down after the requests in flight");
}

/// One line per request: method, path, status, seconds of audio, wall time.
async fn log_request(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut left = ClientLeft(Some(format!("{method} {path}")));
    let response = next.run(request).await;
    left.0 = None;
    let audio = response
        .extensions()
        .get::<AudioSeconds>()
        .map_or("-".to_string(), |a| format!("{:.1}", a.0));
    eprintln!(
        "whisk: {method} {path} {} audio {audio} s wall {:.3} s",
        response.status().as_u16(),
        started.elapsed().as_secs_f64()
    );
    response
}

/// Logs a request whose client left before its answer (its handler is dropped unfinished).
struct ClientLeft(Option<String>);

impl Drop for ClientLeft {
    fn drop(&mut self) {
        if let Some(request) = &self.0 {
            eprintln!("whisk: {request}: the client left before its answer");
        }
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": shared.config.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "whisk",
        }],
    }))
}

async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    respond(handle(&shared, &headers, multipart, Task::Transcribe).await)
}

async fn translations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    multipart: Multipart,
) -> Response {
    respond(handle(&shared, &headers, multipart, Task::Translate).await)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &shared.config.api_key else {
        return Ok(());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

async fn handle(
    shared: &Shared,
    headers: &HeaderMap,
    multipart: Multipart,
    task: Task,
) -> Result<Response, ApiError> {
    authorize(shared, headers)?;
    let admitted = shared
        .queue
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded())?;
    let form = api::Form::read(multipart).await?;
    let options = form.options(task, &shared.config);
    let words = options.word_timestamps;
    let format = form.response_format;
    let name = std::path::PathBuf::from(form.file_name);
    let audio = form.audio;
    let decode = async {
        tokio::task::spawn_blocking(move || {
            let (samples, _damage) = whisk::load_audio_bytes_with_damage(&name, audio)?;
            let duration = samples.len() as f64 / whisk::SAMPLE_RATE as f64;
            whisk::Result::Ok((samples, duration))
        })
        .await
        .map_err(|e| ApiError::internal(format!("decoding failed: {e}")))?
        .map_err(|e| ApiError::bad_request(e.to_string()))
    };
    if form.stream {
        let (samples, duration) = decode.await?;
        let model = shared.model.clone();
        let mut response = stream::respond(model, samples, options, admitted);
        response.extensions_mut().insert(AudioSeconds(duration));
        return Ok(response);
    }
    let work = async {
        let (samples, duration) = decode.await?;
        let transcript = shared
            .batcher
            .transcribe(samples, options)
            .await
            .ok_or_else(|| ApiError::internal("the decoder has stopped"))?
            .map_err(|e| match e {
                whisk::Error::Audio(_) => ApiError::bad_request(e.to_string()),
                other => ApiError::internal(other.to_string()),
            })?;
        Ok::<_, ApiError>((transcript, duration))
    };
    let (transcript, duration) = tokio::time::timeout(shared.config.request_timeout, work)
        .await
        .map_err(|_| ApiError::overloaded())??;
    drop(admitted);
    let mut response = api::render(format, &transcript, task, duration, words);
    response.extensions_mut().insert(AudioSeconds(duration));
    Ok(response)
}
