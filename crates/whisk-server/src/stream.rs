//! `stream=true`: segments sent as server-sent events as they are final, in the events
//! OpenAI's clients read (`transcript.text.delta` per segment, with its times beside the
//! text, then `transcript.text.done`). A streamed request is decoded on its own by the
//! sequential loop, which finishes segments window by window; a client that leaves stops it
//! after the window being decoded.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use whisk::{Model, Segment, TranscribeOptions};

enum Message {
    Segment(Segment),
    Done(String),
    Failed(String),
}

/// Starts decoding `samples` and answers with the event stream; `admitted` is held until
/// the decode ends.
pub fn respond(
    model: Arc<Model>,
    samples: Vec<f32>,
    options: TranscribeOptions,
    admitted: OwnedSemaphorePermit,
) -> Response {
    let (sender, receiver) = mpsc::unbounded_channel();
    let options = TranscribeOptions {
        batch_size: 1,
        ..options
    };
    tokio::task::spawn_blocking(move || {
        let _admitted = admitted;
        let mut done = 0.0;
        let result = model.transcribe_with_progress(&samples, &options, &mut |p| {
            done = p.done_seconds;
            for segment in p.segments {
                let _ = sender.send(Message::Segment(segment.clone()));
            }
            // The client has gone (its event stream was dropped): no one reads on.
            if sender.is_closed() {
                p.stop.set(true);
            }
        });
        if result.as_ref().is_err_and(whisk::Error::is_stopped) {
            let total = samples.len() as f64 / whisk::SAMPLE_RATE as f64;
            eprintln!(
                "whisk: a streaming client left; its decode stopped at {done:.1} of {total:.1} s"
            );
        }
        let _ = sender.send(match result {
            Ok(transcript) => Message::Done(transcript.text.trim().to_string()),
            Err(e) => Message::Failed(e.to_string()),
        });
    });
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let message = receiver.recv().await?;
        Some((Ok::<_, Infallible>(event(message)), receiver))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn event(message: Message) -> Event {
    let data = match message {
        Message::Segment(s) => json!({
            "type": "transcript.text.delta",
            "delta": s.text,
            "segment_id": s.id.to_string(),
            "start": s.start,
            "end": s.end,
        }),
        Message::Done(text) => json!({"type": "transcript.text.done", "text": text}),
        Message::Failed(message) => json!({"error": {
            "message": message,
            "type": "server_error",
            "param": null,
            "code": null,
        }}),
    };
    Event::default().data(data.to_string())
}
