//! Slot bookkeeping every backend shares: which slots hold a window, how many tokens each has
//! cached, and the checks that turn a malformed request into an error before any tensor work.

use crate::{BackendError, DecodeStep, MelBatch, Result};
use whisk_types::ModelDims;

/// Host-side state of a decoder's slots. Backends keep the tensors; this keeps the facts.
#[derive(Debug, Clone)]
pub struct SlotTable {
    lengths: Vec<usize>,
    attached: Vec<bool>,
    /// Which attach filled each slot's cross K/V: slots with equal ids hold the same window,
    /// so copying between them can skip the cross-attention tensors (Burn's slots each keep
    /// their own; candle's share entries, see its `CrossEntries`).
    window_ids: Vec<u64>,
    next_window_id: u64,
}

fn invalid<T>(why: String) -> Result<T> {
    Err(BackendError::InvalidRequest(why))
}

impl SlotTable {
    pub fn new(slots: usize) -> Result<Self> {
        if slots == 0 {
            return invalid("a decoder needs at least one slot".into());
        }
        Ok(Self {
            lengths: vec![0; slots],
            attached: vec![false; slots],
            window_ids: vec![0; slots],
            next_window_id: 1,
        })
    }

    pub fn slots(&self) -> usize {
        self.lengths.len()
    }

    /// Tokens cached in `slot`.
    pub fn length(&self, slot: usize) -> usize {
        self.lengths[slot]
    }

    pub fn is_attached(&self, slot: usize) -> bool {
        self.attached[slot]
    }

    /// Checks an attach of `windows` (of `encoded` encoded windows) to `slots`.
    pub fn check_attach(&self, slots: &[usize], windows: &[usize], encoded: usize) -> Result<()> {
        if let Some(w) = windows.iter().find(|&&w| w >= encoded) {
            return invalid(format!("window {w} asked for, {encoded} encoded"));
        }
        if slots.len() != windows.len() {
            return invalid(format!(
                "{} slots for {} windows",
                slots.len(),
                windows.len()
            ));
        }
        self.check_distinct(slots.iter().copied())
    }

    /// Records that `slots` now hold fresh windows with empty caches.
    pub fn attached(&mut self, slots: &[usize]) {
        for &slot in slots {
            self.lengths[slot] = 0;
            self.attached[slot] = true;
            self.window_ids[slot] = self.next_window_id;
            self.next_window_id += 1;
        }
    }

    /// Checks a [`crate::Backend::release`] request: slots that exist, each once.
    pub fn check_release(&self, slots: &[usize]) -> Result<()> {
        self.check_distinct(slots.iter().copied())
    }

    /// Records that `slots` hold nothing: they must be attached again before a step reads them.
    pub fn released(&mut self, slots: &[usize]) {
        for &slot in slots {
            self.lengths[slot] = 0;
            self.attached[slot] = false;
        }
    }

    /// Checks a [`crate::Backend::copy_slots`] request.
    pub fn check_copy(&self, moves: &[(usize, usize)]) -> Result<()> {
        self.check_distinct(moves.iter().map(|m| m.1))?;
        // A source may feed several destinations; it only has to exist.
        if let Some(&(from, _)) = moves.iter().find(|m| m.0 >= self.slots()) {
            return invalid(format!(
                "slot {from} asked for; the decoder has {}",
                self.slots()
            ));
        }
        if let Some(&(from, _)) = moves.iter().find(|m| !self.attached[m.0]) {
            return invalid(format!("slot {from}: no window attached to copy"));
        }
        Ok(())
    }

    /// The moves whose destination attends to a different window than its source, i.e. those
    /// that must copy the cross-attention K/V too.
    pub fn cross_moves(&self, moves: &[(usize, usize)]) -> Vec<(usize, usize)> {
        moves
            .iter()
            .copied()
            .filter(|&(from, to)| {
                self.window_ids[from] != self.window_ids[to] || !self.attached[to]
            })
            .collect()
    }

    /// Records a copy (all sources read before any destination is written).
    pub fn copied(&mut self, moves: &[(usize, usize)]) {
        let before = self.clone();
        for &(from, to) in moves {
            self.lengths[to] = before.lengths[from];
            self.attached[to] = before.attached[from];
            self.window_ids[to] = before.window_ids[from];
        }
    }

    /// Checks a decoder step against the model and the slots' state.
    pub fn check_step(&self, dims: &ModelDims, step: &DecodeStep<'_>) -> Result<()> {
        self.check_distinct(step.rows.iter().map(|r| r.slot))?;
        for row in step.rows {
            let invalid = |why: String| invalid(format!("slot {}: {why}", row.slot));
            if !self.attached[row.slot] {
                return invalid("no window attached".into());
            }
            if row.tokens.is_empty() {
                return invalid("no tokens fed".into());
            }
            if !step.keep_cache && row.position != 0 {
                return invalid(format!(
                    "a step that keeps no cache starts at position 0, not {}",
                    row.position
                ));
            }
            if row.position > self.lengths[row.slot] {
                return invalid(format!(
                    "position {} is past the {} cached tokens",
                    row.position, self.lengths[row.slot]
                ));
            }
            if row.position + row.tokens.len() > dims.n_text_ctx {
                return invalid(format!(
                    "sequence of {} tokens exceeds the text context of {}",
                    row.position + row.tokens.len(),
                    dims.n_text_ctx
                ));
            }
            if let Some(&t) = row.tokens.iter().find(|&&t| t as usize >= dims.n_vocab) {
                return invalid(format!("token {t} is outside the vocabulary"));
            }
            if let Some(&p) = row.logits_at.iter().find(|&&p| p >= row.tokens.len()) {
                return invalid(format!(
                    "logits asked at position {p} of a {}-token step",
                    row.tokens.len()
                ));
            }
        }
        if let Some(&(l, h)) = step
            .cross_qk_heads
            .iter()
            .find(|&&(l, h)| l >= dims.n_text_layer || h >= dims.n_text_head)
        {
            return Err(BackendError::InvalidRequest(format!(
                "alignment head ({l}, {h}) is outside the {}x{} decoder",
                dims.n_text_layer, dims.n_text_head
            )));
        }
        Ok(())
    }

    /// Records the new cache lengths after a step (none where it keeps no cache).
    pub fn stepped(&mut self, step: &DecodeStep<'_>) {
        for row in step.rows {
            self.lengths[row.slot] = match step.keep_cache {
                true => row.position + row.tokens.len(),
                false => 0,
            };
        }
    }

    /// Slots must exist and appear at most once.
    fn check_distinct(&self, slots: impl Iterator<Item = usize>) -> Result<()> {
        let count = self.slots();
        let mut seen = vec![false; count];
        for slot in slots {
            match seen.get_mut(slot) {
                None => return invalid(format!("slot {slot} asked for; the decoder has {count}")),
                Some(true) => return invalid(format!("slot {slot} appears twice in one request")),
                Some(s) => *s = true,
            }
        }
        Ok(())
    }
}

/// Checks that a mel batch fits the model: its bins, its frame count, its data length.
pub fn check_mel(dims: &ModelDims, mel: &MelBatch<'_>) -> Result<()> {
    if mel.n_mels != dims.n_mels || mel.data.len() != mel.windows * mel.n_mels * mel.frames {
        return invalid(format!(
            "mel batch is {}x{}x{} ({} values); the model reads {} mel bins",
            mel.windows,
            mel.n_mels,
            mel.frames,
            mel.data.len(),
            dims.n_mels
        ));
    }
    if mel.frames != 2 * dims.n_audio_ctx {
        return invalid(format!(
            "mel windows have {} frames; the model reads {}",
            mel.frames,
            2 * dims.n_audio_ctx
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_forked_from_one_attach_share_its_window_until_attached_again() {
        let mut table = SlotTable::new(5).unwrap();
        table.attached(&[0, 3]);
        // Slot 0's window forked into 1 and 2 (a beam search); slot 3 holds another.
        table.copied(&[(0, 1), (0, 2)]);
        assert!(table.cross_moves(&[(0, 2), (1, 2)]).is_empty());
        assert_eq!(table.cross_moves(&[(3, 2)]), [(3, 2)]);
        // A fresh window in slot 1 parts it from the others.
        table.attached(&[1]);
        assert_eq!(table.cross_moves(&[(0, 1)]), [(0, 1)]);
    }
}
