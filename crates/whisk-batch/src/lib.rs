//! Decoding many Whisper windows together, with no tensor library.
//!
//! A *row* is one window being decoded: its prompt, its sampled tokens, its timestamp-rule
//! state, its random stream and the attention rows kept for word timing. Rows live in the slots
//! of one backend decoder. Each [`Scheduler::step`] admits waiting windows into free slots
//! (encoding them together), feeds every row in flight, and hands back the rows that finished;
//! their slots take the next windows (continuous batching). Rows may feed different numbers of
//! tokens in one step (a prompt, one sampled token, a whole text for the alignment pass).
//!
//! Every row's result equals that of decoding its window alone: rules and picks act per row,
//! and the backend masks each row to its own cache.

mod alignment_pass;
mod row;
mod scheduler;

pub use alignment_pass::{alignment_pass_for, alignment_pass_input, read_alignment_pass, Refeed};
pub use row::{decode_window, Repetitive, RowRequest, Spell, WindowRequest, WindowResult};
pub use scheduler::{Job, Scheduler, SchedulerConfig};
