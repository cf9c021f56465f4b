//! Which record of an id is the current one, after every update file and deletion.
//!
//! PubMed update files re-issue records (a later one replaces an earlier one with the same
//! PMID) and withdraw others (`DeleteCitation`). Records are numbered in file-name order,
//! then in file order; a first pass writes, for each id, the number of its last record,
//! or "deleted" when a deletion came after it. The second pass keeps a record only when
//! it is its id's current one. The table is indexed by id (4 bytes per id up to the
//! largest: ~160 MB for all of PubMed), so its size does not depend on how many files are
//! read; ids beyond any real PMID or PMC id go to a map instead, so that a stray huge id
//! cannot make the table huge.

const ABSENT: u32 = 0;
const DELETED: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Current,
    Superseded,
    Deleted,
}

/// Ids below this are kept in the dense table (at most 256 MB).
const DENSE_LIMIT: u64 = 1 << 26;

#[derive(Default)]
pub struct Ledger {
    slots: Vec<u32>,
    sparse: std::collections::HashMap<u64, u32>,
    deletions: u64,
}

impl Ledger {
    /// Record number `ordinal` (global, from 0) carries `id`.
    pub fn add(&mut self, id: u64, ordinal: u64) {
        let slot = self.slot(id);
        *slot = u32::try_from(ordinal + 1).expect("fewer than 4 billion records");
    }

    pub fn delete(&mut self, id: u64) {
        self.deletions += 1;
        *self.slot(id) = DELETED;
    }

    pub fn fate(&self, id: u64, ordinal: u64) -> Fate {
        let slot = if id < DENSE_LIMIT {
            self.slots.get(id as usize).copied()
        } else {
            self.sparse.get(&id).copied()
        };
        match slot.unwrap_or(ABSENT) {
            DELETED => Fate::Deleted,
            v if v as u64 == ordinal + 1 => Fate::Current,
            _ => Fate::Superseded,
        }
    }

    /// Ids whose final state is deleted.
    pub fn deleted_ids(&self) -> u64 {
        let dense = self.slots.iter().filter(|&&s| s == DELETED).count();
        let sparse = self.sparse.values().filter(|&&s| s == DELETED).count();
        (dense + sparse) as u64
    }

    pub fn deletion_records(&self) -> u64 {
        self.deletions
    }

    fn slot(&mut self, id: u64) -> &mut u32 {
        if id >= DENSE_LIMIT {
            return self.sparse.entry(id).or_insert(ABSENT);
        }
        let i = id as usize;
        if i >= self.slots.len() {
            self.slots
                .resize((i + 1).max(self.slots.len() * 5 / 4), ABSENT);
        }
        &mut self.slots[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_records_win_and_deletions_stick_until_re_added() {
        let mut l = Ledger::default();
        l.add(10, 0);
        l.add(11, 1);
        l.add(10, 2); // an update re-issues 10
        l.delete(11);
        l.add(12, 3);
        l.delete(12);
        l.add(12, 4); // re-added after its deletion
        assert_eq!(l.fate(10, 0), Fate::Superseded);
        assert_eq!(l.fate(10, 2), Fate::Current);
        assert_eq!(l.fate(11, 1), Fate::Deleted);
        assert_eq!(l.fate(12, 3), Fate::Superseded);
        assert_eq!(l.fate(12, 4), Fate::Current);
        assert_eq!(l.deleted_ids(), 1);
        l.add(900_000_000_123, 5);
        l.add(900_000_000_123, 6);
        assert_eq!(l.fate(900_000_000_123, 5), Fate::Superseded);
        assert_eq!(l.fate(900_000_000_123, 6), Fate::Current);
    }
}
