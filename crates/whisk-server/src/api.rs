//! OpenAI's audio API as plain data: the multipart form a request sends, the options it
//! becomes, the bodies answered in each `response_format`, and the error shape.

use axum::extract::multipart::{Multipart, MultipartError};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use whisk::output::OutputOptions;
use whisk::{Task, TranscribeOptions, Transcript};

use crate::languages;

/// An error as OpenAI's API answers it: a status and `{"error": {"message", "type", ...}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            code: None,
        }
    }

    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "Incorrect API key provided.".into(),
            code: Some("invalid_api_key"),
        }
    }

    pub fn overloaded() -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "The server is busy with other requests; try again later.".into(),
            code: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            code: None,
        }
    }

    fn from_multipart(e: MultipartError) -> Self {
        // A body that stops short (a client that left mid-upload) is the request's fault.
        let status = match e.status() {
            s if s.is_server_error() => StatusCode::BAD_REQUEST,
            s => s,
        };
        ApiError {
            status,
            message: e.body_text(),
            code: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "param": null,
            "code": self.code,
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

/// How the transcript is answered (`response_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

/// One request's form fields.
#[derive(Debug)]
pub struct Form {
    pub file_name: String,
    pub audio: Vec<u8>,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub response_format: ResponseFormat,
    pub temperature: f64,
    pub word_granularity: bool,
    /// Segments as server-sent events as they are final (`stream=true`).
    pub stream: bool,
}

impl Form {
    /// Reads the multipart body; the upload limit is enforced as it streams in.
    pub async fn read(mut multipart: Multipart) -> Result<Form, ApiError> {
        let mut file = None;
        let mut form = Form {
            file_name: String::new(),
            audio: Vec::new(),
            language: None,
            prompt: None,
            response_format: ResponseFormat::Json,
            temperature: 0.0,
            word_granularity: false,
            stream: false,
        };
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(ApiError::from_multipart)?
        {
            let name = field.name().unwrap_or_default().to_string();
            if name == "file" {
                let file_name = field.file_name().unwrap_or("upload").to_string();
                let bytes = field.bytes().await.map_err(ApiError::from_multipart)?;
                file = Some((file_name, bytes.to_vec()));
                continue;
            }
            let value = field.text().await.map_err(ApiError::from_multipart)?;
            form.set(&name, value)?;
        }
        let (file_name, audio) =
            file.ok_or_else(|| ApiError::bad_request("the `file` field is missing"))?;
        if audio.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{file_name}: the file is empty"
            )));
        }
        if form.stream
            && !matches!(
                form.response_format,
                ResponseFormat::Json | ResponseFormat::Text
            )
        {
            return Err(ApiError::bad_request(
                "stream=true answers events of text: use response_format json or text",
            ));
        }
        form.file_name = file_name;
        form.audio = audio;
        Ok(form)
    }

    fn set(&mut self, name: &str, value: String) -> Result<(), ApiError> {
        let value = value.trim().to_string();
        match name {
            // Any model name is accepted: the server has one model.
            "model" | "chunking_strategy" | "include[]" => {}
            "stream" => {
                self.stream = match value.as_str() {
                    "true" | "True" | "1" => true,
                    "false" | "False" | "0" | "" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "stream `{other}`: use true or false"
                        )))
                    }
                }
            }
            "language" if !value.is_empty() => self.language = Some(value),
            "prompt" if !value.is_empty() => self.prompt = Some(value),
            "language" | "prompt" => {}
            "response_format" => {
                self.response_format = match value.as_str() {
                    "json" => ResponseFormat::Json,
                    "text" => ResponseFormat::Text,
                    "srt" => ResponseFormat::Srt,
                    "vtt" => ResponseFormat::Vtt,
                    "verbose_json" => ResponseFormat::VerboseJson,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "response_format `{other}`: use json, text, srt, verbose_json or vtt"
                        )))
                    }
                }
            }
            "temperature" => {
                self.temperature = value
                    .parse()
                    .ok()
                    .filter(|t: &f64| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("temperature `{value}`: use 0 to 1"))
                    })?
            }
            "timestamp_granularities[]" | "timestamp_granularities" => match value.as_str() {
                "word" => self.word_granularity = true,
                "segment" => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "timestamp granularity `{other}`: use word or segment"
                    )))
                }
            },
            other => return Err(ApiError::bad_request(format!("unknown field `{other}`"))),
        }
        Ok(())
    }

    /// whisk's options for this request.
    pub fn options(&self, task: Task, config: &crate::Config) -> TranscribeOptions {
        let mut options = TranscribeOptions {
            batch_size: config.batch_size,
            pack_short_inputs: config.pack_requests,
            initial_prompt: self.prompt.clone(),
            // Words are timed when asked for, and for subtitles (whisk's timing is its edge).
            word_timestamps: self.word_granularity
                || matches!(
                    self.response_format,
                    ResponseFormat::Srt | ResponseFormat::Vtt
                ),
            ..TranscribeOptions::default()
        };
        options.decode.task = task;
        options.decode.beam_size = Some(config.beam_size);
        options.decode.language = self.language.clone();
        // OpenAI: 0 lets the temperature rise on failed decodes; above 0 samples at it.
        if self.temperature > 0.0 {
            options.temperatures = vec![self.temperature];
        }
        options
    }
}

/// The answer in the requested format.
pub fn render(
    format: ResponseFormat,
    transcript: &Transcript,
    task: Task,
    duration: f64,
    words: bool,
) -> Response {
    let text = transcript.text.trim().to_string();
    match format {
        ResponseFormat::Json => axum::Json(json!({ "text": text })).into_response(),
        ResponseFormat::Text => plain(format!("{text}\n"), "text/plain; charset=utf-8"),
        ResponseFormat::Srt => plain(
            whisk::output::to_srt(transcript, &OutputOptions::default()),
            "text/plain; charset=utf-8",
        ),
        ResponseFormat::Vtt => plain(
            whisk::output::to_vtt(transcript, &OutputOptions::default()),
            "text/vtt; charset=utf-8",
        ),
        ResponseFormat::VerboseJson => {
            axum::Json(verbose_json(transcript, task, duration, words)).into_response()
        }
    }
}

fn plain(body: String, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// OpenAI's `verbose_json`: task, language (its English name), duration, text, segments, and
/// words when they were asked for.
pub fn verbose_json(transcript: &Transcript, task: Task, duration: f64, words: bool) -> Value {
    let segments: Vec<Value> = transcript
        .segments
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "seek": s.seek,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            })
        })
        .collect();
    let mut body = json!({
        "task": match task { Task::Transcribe => "transcribe", Task::Translate => "translate" },
        "language": languages::name(&transcript.language),
        "duration": duration,
        "text": transcript.text.trim(),
        "segments": segments,
    });
    if words {
        let words: Vec<Value> = transcript
            .segments
            .iter()
            .flat_map(|s| s.words.iter().flatten())
            .map(|w| json!({"word": w.word.trim(), "start": w.start, "end": w.end}))
            .collect();
        body["words"] = Value::Array(words);
    }
    body
}
