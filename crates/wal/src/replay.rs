//! Rebuilding the log from scanned records, exactly as the writes shaped it.

use std::path::Path;

use crate::error::{Corruption, WalError};
use crate::scan::Event;
use crate::types::{Entry, Marker};

/// Accumulates the state `Wal::open` returns.
#[derive(Debug)]
pub(crate) struct Replay {
    /// The marker the WAL is opened at: entries at or below it are not kept.
    at: Marker,
    /// Index of the last entry of the log so far (or of a marker that jumped past it).
    pub last_index: u64,
    /// Entries after `at`, contiguous.
    pub entries: Vec<Entry>,
    /// Latest hard state.
    pub hard_state: Option<Vec<u8>>,
    /// Latest marker recorded.
    pub latest_marker: Marker,
    /// `at` was found among the recorded markers.
    at_recorded: bool,
    /// Term of the live entry at `at.index`, if the log holds it.
    at_term_found: Option<u64>,
    /// A snapshot received after `at` replaced the log up to this index: the entries between
    /// `at` and it are not held.
    replaced_through: Option<u64>,
}

impl Replay {
    /// Starts a replay at `at`, for a log whose first segment begins after `last_index`.
    pub(crate) fn new(at: Marker, last_index: u64) -> Self {
        Self {
            at,
            last_index,
            entries: Vec::new(),
            hard_state: None,
            latest_marker: Marker::ZERO,
            at_recorded: at == Marker::ZERO,
            at_term_found: None,
            replaced_through: None,
        }
    }

    /// Applies one record.
    pub(crate) fn apply(
        &mut self,
        event: Event<'_>,
        path: &Path,
        offset: u64,
    ) -> Result<(), WalError> {
        match event {
            Event::HardState(bytes) => {
                let state = self.hard_state.get_or_insert_with(Vec::new);
                state.clear();
                state.extend_from_slice(bytes);
            }
            Event::Marker { marker, received } => {
                if received {
                    self.replace_log(marker);
                } else {
                    self.last_index = self.last_index.max(marker.index);
                }
                self.at_recorded |= marker == self.at;
                self.latest_marker = marker;
            }
            Event::Entry { index, term, data } => self.entry(index, term, data, path, offset)?,
        }
        Ok(())
    }

    fn entry(
        &mut self,
        index: u64,
        term: u64,
        data: &[u8],
        path: &Path,
        offset: u64,
    ) -> Result<(), WalError> {
        let expected_index_max = self.last_index.saturating_add(1);
        if index == 0 || index > expected_index_max {
            return Err(WalError::Corrupt {
                path: path.to_path_buf(),
                offset,
                reason: Corruption::IndexGap {
                    expected_index_max,
                    found_index: index,
                },
            });
        }
        if index <= self.last_index {
            self.truncate_from(index);
        }
        self.last_index = index;
        if index == self.at.index {
            self.at_term_found = Some(term);
        }
        if index <= self.at.index {
            return Ok(());
        }
        if self.replaced_through.is_some() {
            return Err(WalError::EntriesUnavailable {
                marker: self.at,
                found_index: index,
            });
        }
        let expected = self
            .entries
            .last()
            .map_or(self.at.index.saturating_add(1), |e| {
                e.index.saturating_add(1)
            });
        if index != expected {
            return Err(WalError::EntriesUnavailable {
                marker: self.at,
                found_index: index,
            });
        }
        self.entries.push(Entry {
            index,
            term,
            payload: data.to_vec(),
        });
        Ok(())
    }

    /// Log conflict: entries at `index` and above are replaced.
    fn truncate_from(&mut self, index: u64) {
        let keep = self
            .entries
            .first()
            .map_or(0, |first| index.saturating_sub(first.index));
        self.entries
            .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
        if index <= self.at.index {
            self.at_term_found = None;
        }
    }

    /// A snapshot received from a leader: the log is replaced up to and including its index,
    /// so every entry above it (a divergent tail) is dropped and the log ends at it, with the
    /// snapshot's term there.
    fn replace_log(&mut self, marker: Marker) {
        self.truncate_from(marker.index.saturating_add(1));
        self.last_index = marker.index;
        if marker.index == self.at.index {
            self.at_term_found = Some(marker.term);
        } else if marker.index > self.at.index {
            // The entries held between `at` and the snapshot are the local, replaced ones.
            self.entries.clear();
            self.replaced_through = Some(marker.index);
        }
    }

    /// Checks that `at` is usable.
    pub(crate) fn check_marker(&self) -> Result<(), WalError> {
        if !self.at_recorded {
            return Err(WalError::MarkerNotFound { marker: self.at });
        }
        if let Some(index) = self.replaced_through {
            return Err(WalError::EntriesUnavailable {
                marker: self.at,
                found_index: index,
            });
        }
        match self.at_term_found {
            Some(found_term) if found_term != self.at.term => Err(WalError::MarkerMismatch {
                marker: self.at,
                found_term,
            }),
            _ => Ok(()),
        }
    }
}
