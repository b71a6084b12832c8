//! How a ragged decoder step becomes one rectangular batch, and how its outputs go back to
//! the rows. Plain index arithmetic, shared by every backend so they pad, mask and unpack
//! identically.

use crate::{CrossQk, DecodeStep, RowStep};

/// Which cache slots a step computes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotBatch {
    /// A contiguous range; slots in it that are not stepped ride along and are discarded.
    Range { first: usize, len: usize },
    /// A gathered copy of just these slots, when a range would waste more than it saves.
    Gather(Vec<usize>),
}

/// A decoder step laid out as `size` rows of `n` tokens attending to `span` cache positions.
#[derive(Debug, Clone)]
pub struct StepLayout {
    pub batch: SlotBatch,
    /// Rows computed (stepped rows plus any riding along in a range).
    pub size: usize,
    /// Tokens per computed row: the longest row's, shorter rows padded.
    pub n: usize,
    /// Cache positions every row attends to (the furthest row's end).
    pub span: usize,
    /// `index[r]`: step row r's place in the computed batch.
    pub index: Vec<usize>,
    /// `[size * n]` token ids and positional-embedding rows.
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    /// `[size, n, span]` additive mask: each query sees its own row's past and itself.
    pub mask: Vec<f32>,
    /// Flat `[size * n]` indices whose logits are returned, rows in step order.
    pub picks: Vec<usize>,
}

impl StepLayout {
    pub fn new(step: &DecodeStep<'_>, n_text_ctx: usize) -> Self {
        let rows = step.rows;
        let n = rows.iter().map(|r| r.tokens.len()).max().unwrap_or(1);
        let first = rows.iter().map(|r| r.slot).min().unwrap_or(0);
        let last = rows.iter().map(|r| r.slot).max().unwrap_or(0);
        let fed: usize = rows.iter().map(|r| r.tokens.len()).sum();
        let (batch, index, size) = if (last + 1 - first) * n <= 2 * fed {
            let len = last + 1 - first;
            let index: Vec<usize> = rows.iter().map(|r| r.slot - first).collect();
            (SlotBatch::Range { first, len }, index, len)
        } else {
            let slots = rows.iter().map(|r| r.slot).collect();
            (
                SlotBatch::Gather(slots),
                (0..rows.len()).collect(),
                rows.len(),
            )
        };
        let span = rows
            .iter()
            .map(|r| r.position + r.tokens.len())
            .max()
            .unwrap_or(1);
        let mut tokens = vec![0u32; size * n];
        let mut positions = vec![0u32; size * n];
        // Rows not stepped see only position 0 (anything finite; their output is dropped).
        let mut allowed = vec![1usize; size * n];
        for (r, row) in rows.iter().enumerate() {
            let b = index[r];
            for i in 0..n {
                let k = b * n + i;
                let at = row.position + i.min(row.tokens.len() - 1);
                tokens[k] = row.tokens.get(i).copied().unwrap_or(0);
                positions[k] = (row.position + i).min(n_text_ctx - 1) as u32;
                allowed[k] = at + 1;
            }
        }
        let mask = allowed
            .iter()
            .flat_map(|&a| (0..span).map(move |j| if j < a { 0.0 } else { f32::NEG_INFINITY }))
            .collect();
        let picks = rows
            .iter()
            .enumerate()
            .flat_map(|(r, row)| {
                let base = index[r] * n;
                row.logits_at.iter().map(move |&p| base + p)
            })
            .collect();
        Self {
            batch,
            size,
            n,
            span,
            index,
            tokens,
            positions,
            mask,
            picks,
        }
    }

    /// Splits the logits of [`Self::picks`] (`[picks, n_vocab]`) into per-row blocks.
    pub fn split_logits(&self, rows: &[RowStep<'_>], all: &[f32], n_vocab: usize) -> Vec<Vec<f32>> {
        let mut rest = all;
        rows.iter()
            .map(|row| {
                let (mine, tail) = rest.split_at(row.logits_at.len() * n_vocab);
                rest = tail;
                mine.to_vec()
            })
            .collect()
    }

    /// Each row's [`CrossQk`] for `heads` chosen heads over `frames`, zeroed, for
    /// [`Self::put_cross_qk`] to fill head by head as the backend's layers finish: no copy of
    /// every head's scores is then held beside the rows'.
    pub fn empty_cross_qk(
        &self,
        rows: &[RowStep<'_>],
        heads: usize,
        frames: usize,
    ) -> Vec<CrossQk> {
        rows.iter()
            .map(|row| CrossQk {
                heads,
                tokens: row.tokens.len(),
                frames,
                data: vec![0.0; heads * row.tokens.len() * frames],
            })
            .collect()
    }

    /// Writes chosen head `i`'s `[size, n, frames]` scores into each row's [`CrossQk`],
    /// dropping padding.
    pub fn put_cross_qk(&self, qk: &mut [CrossQk], i: usize, scores: &[f32]) {
        for (r, row_qk) in qk.iter_mut().enumerate() {
            let (len, frames) = (row_qk.tokens, row_qk.frames);
            let start = self.index[r] * self.n * frames;
            row_qk.data[i * len * frames..][..len * frames]
                .copy_from_slice(&scores[start..start + len * frames]);
        }
    }

    /// Splits each chosen head's `[size, n, frames]` scores into each row's [`CrossQk`],
    /// dropping padding.
    pub fn split_cross_qk(
        &self,
        rows: &[RowStep<'_>],
        heads: &[Vec<f32>],
        frames: usize,
    ) -> Vec<CrossQk> {
        let mut qk = self.empty_cross_qk(rows, heads.len(), frames);
        for (i, head) in heads.iter().enumerate() {
            self.put_cross_qk(&mut qk, i, head);
        }
        qk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(slot: usize, position: usize, tokens: &'a [u32], at: &'a [usize]) -> RowStep<'a> {
        RowStep {
            slot,
            position,
            tokens,
            logits_at: at,
        }
    }

    #[test]
    fn ragged_rows_are_padded_and_masked_per_row() {
        let rows = [row(2, 3, &[7, 8], &[1]), row(0, 0, &[1, 2, 3], &[0, 2])];
        let step = DecodeStep {
            rows: &rows,
            cross_qk_heads: &[],
            keep_cache: true,
        };
        let l = StepLayout::new(&step, 448);
        assert_eq!(l.batch, SlotBatch::Range { first: 0, len: 3 });
        assert_eq!((l.size, l.n, l.span), (3, 3, 5));
        assert_eq!(l.index, vec![2, 0]);
        assert_eq!(&l.tokens[6..9], &[7, 8, 0]);
        assert_eq!(&l.positions[6..9], &[3, 4, 5]);
        let mask_row = |k: usize| &l.mask[k * 5..k * 5 + 5];
        let inf = f32::NEG_INFINITY;
        assert_eq!(mask_row(6), &[0.0, 0.0, 0.0, 0.0, inf]);
        assert_eq!(mask_row(7), &[0.0; 5]);
        // Padding repeats the row's last token's view.
        assert_eq!(mask_row(8), &[0.0; 5]);
        // Slot 0's second token sees positions 0 and 1 only.
        assert_eq!(mask_row(1), &[0.0, 0.0, inf, inf, inf]);
        // Slot 1 is not stepped: it rides along seeing position 0.
        assert_eq!(mask_row(3), &[0.0, inf, inf, inf, inf]);
        assert_eq!(l.picks, vec![7, 0, 2]);
    }

    #[test]
    fn sparse_slots_are_gathered() {
        let rows = [row(0, 0, &[1], &[0]), row(9, 0, &[1], &[0])];
        let step = DecodeStep {
            rows: &rows,
            cross_qk_heads: &[],
            keep_cache: true,
        };
        let l = StepLayout::new(&step, 448);
        assert_eq!(l.batch, SlotBatch::Gather(vec![0, 9]));
        assert_eq!(l.index, vec![0, 1]);
        // Two heads' scores, [2 rows, n=1, 2 frames] each.
        let heads = vec![vec![0.0, 1.0, 4.0, 5.0], vec![2.0, 3.0, 6.0, 7.0]];
        let split = l.split_cross_qk(&rows, &heads, 2);
        assert_eq!(split[0].data, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(split[1].data, vec![4.0, 5.0, 6.0, 7.0]);
        assert_eq!(
            (split[1].heads, split[1].tokens, split[1].frames),
            (2, 1, 2)
        );
        let logits = l.split_logits(&rows, &[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(logits, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
    }
}
