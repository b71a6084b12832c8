//! Which cross-attention K/V entry each decoder slot reads. Slots of one window share one
//! entry (beam hypotheses forked from one attach, best-of candidates, a row that reuses a
//! finished row's slot), so the entries a run writes follow the windows in flight rather
//! than the slots: at beam 5 and batch 8, about eight of the forty.

/// There are at most as many entries as slots (each slot reads at most one), and a fresh one
/// is the lowest no slot reads.
#[derive(Debug, Clone)]
pub struct CrossEntries {
    of_slot: Vec<Option<usize>>,
    readers: Vec<usize>,
}

impl CrossEntries {
    pub fn new(slots: usize) -> Self {
        Self {
            of_slot: vec![None; slots],
            readers: vec![0; slots],
        }
    }

    /// The entry `slot` reads, if it was ever attached.
    pub fn of(&self, slot: usize) -> Option<usize> {
        self.of_slot[slot]
    }

    /// A fresh entry for `slot` to be written, the one it read let go.
    pub fn fresh(&mut self, slot: usize) -> usize {
        self.release(slot);
        let entry = self
            .readers
            .iter()
            .position(|&r| r == 0)
            .expect("no more entries read than slots");
        self.readers[entry] = 1;
        self.of_slot[slot] = Some(entry);
        entry
    }

    /// Each move's destination reads its source's entry (all sources read first).
    pub fn share(&mut self, moves: &[(usize, usize)]) {
        let sources: Vec<Option<usize>> =
            moves.iter().map(|&(from, _)| self.of_slot[from]).collect();
        for (source, &(_, to)) in sources.into_iter().zip(moves) {
            self.release(to);
            if let Some(entry) = source {
                self.readers[entry] += 1;
                self.of_slot[to] = Some(entry);
            }
        }
    }

    /// Whether any slot reads `entry`.
    pub fn is_read(&self, entry: usize) -> bool {
        self.readers[entry] > 0
    }

    /// `slot` reads no entry any more.
    pub fn release(&mut self, slot: usize) {
        if let Some(entry) = self.of_slot[slot].take() {
            self.readers[entry] -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_of_one_window_share_an_entry_until_written_again() {
        let mut e = CrossEntries::new(4);
        assert_eq!(e.fresh(2), 0);
        // A beam forks slot 2 into 0, 1 and 3: one entry for all.
        e.share(&[(2, 0), (2, 1), (2, 3)]);
        assert!((0..4).all(|s| e.of(s) == Some(0)));
        // A new window in slot 1 takes the lowest entry nobody else reads.
        assert_eq!(e.fresh(1), 1);
        assert_eq!(e.of(0), Some(0));
        // Once no slot reads entry 0, it is the next fresh one.
        e.share(&[(1, 0), (1, 2), (1, 3)]);
        assert_eq!(e.fresh(3), 0);
        // Swaps read every source before writing.
        e.share(&[(3, 1), (1, 3)]);
        assert_eq!((e.of(1), e.of(3)), (Some(0), Some(1)));
    }
}
