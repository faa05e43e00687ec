//! Property test: random append / conflict / hard state / marker / release / reopen sequences
//! against an in-memory model of the log.

use proptest::prelude::*;
use wal::{Entry, Marker, Metadata, Wal, WalConfig};

const CONFIG: WalConfig = WalConfig {
    segment_bytes: 4096,
};
const META: Metadata = Metadata {
    node_id: 3,
    cluster_id: 9,
};

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` entries starting `back` entries before the end (a conflict if > 0).
    Append {
        back: u64,
        count: u64,
        payload_bytes: usize,
        with_hard_state: bool,
    },
    HardState(u8),
    /// Snapshot marker `back` entries before the end.
    Marker {
        back: u64,
    },
    /// Snapshot received from a leader, `ahead` entries past the end.
    JumpMarker {
        ahead: u64,
    },
    Release,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..4, 1u64..10, 0usize..400, any::<bool>()).prop_map(
            |(back, count, payload_bytes, with_hard_state)| Op::Append {
                back,
                count,
                payload_bytes,
                with_hard_state,
            }
        ),
        1 => any::<u8>().prop_map(Op::HardState),
        2 => (0u64..6).prop_map(|back| Op::Marker { back }),
        1 => (1u64..5).prop_map(|ahead| Op::JumpMarker { ahead }),
        2 => Just(Op::Release),
        2 => Just(Op::Reopen),
    ]
}

/// What the WAL should hold.
#[derive(Debug, Default)]
struct Model {
    last_index: u64,
    /// Contiguous entries ending at `last_index` (possibly starting after a snapshot jump).
    entries: Vec<Entry>,
    hard_state: Option<Vec<u8>>,
    marker: Marker,
    term: u64,
}

impl Model {
    fn term_at(&self, index: u64) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.index == index)
            .map(|e| e.term)
    }

    fn after_marker(&self) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|e| e.index > self.marker.index)
            .cloned()
            .collect()
    }
}

fn payload(index: u64, term: u64, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| (index as usize * 7 + i + term as usize) as u8)
        .collect()
}

fn apply(wal: &mut Wal, model: &mut Model, op: &Op) {
    match *op {
        Op::Append {
            back,
            count,
            payload_bytes,
            with_hard_state,
        } => {
            let first =
                (model.last_index + 1 - back.min(model.last_index)).max(model.marker.index + 1);
            if first <= model.last_index {
                model.term += 1;
            }
            let term = model.term.max(1);
            let batch: Vec<Entry> = (first..first + count)
                .map(|index| Entry {
                    index,
                    term,
                    payload: payload(index, term, payload_bytes),
                })
                .collect();
            let hs = with_hard_state.then(|| format!("hs {first} {count}").into_bytes());
            wal.save(hs.as_deref(), &batch).expect("save");
            model.entries.retain(|e| e.index < first);
            model.entries.extend(batch);
            model.last_index = first + count - 1;
            if hs.is_some() {
                model.hard_state = hs;
            }
        }
        Op::HardState(n) => {
            let hs = vec![n; usize::from(n) + 1];
            wal.save(Some(&hs), &[]).expect("save hard state");
            model.hard_state = Some(hs);
        }
        Op::Marker { back } => {
            let index = model
                .last_index
                .saturating_sub(back)
                .max(model.marker.index);
            if let Some(term) = model.term_at(index) {
                let marker = Marker { index, term };
                wal.save_snapshot_marker(marker).expect("marker");
                model.marker = marker;
            }
        }
        Op::JumpMarker { ahead } => {
            let marker = Marker {
                index: model.last_index + ahead,
                term: model.term.max(1),
            };
            wal.save_snapshot_marker(marker).expect("jump marker");
            model.marker = marker;
            model.entries.clear();
            model.last_index = marker.index;
        }
        Op::Release => wal.release_to(model.marker.index).expect("release"),
        Op::Reopen => unreachable!("handled by the caller"),
    }
    assert_eq!(wal.last_index(), model.last_index);
}

fn reopen(dir: &std::path::Path, wal: Wal, model: &Model) -> Wal {
    wal.close().expect("close");
    let markers = Wal::markers(dir).expect("markers");
    assert_eq!(
        markers.last().copied().unwrap_or(Marker::ZERO),
        model.marker
    );
    let (wal, rec) = Wal::open(dir, model.marker, CONFIG).expect("open");
    assert_eq!(rec.metadata, META);
    assert_eq!(rec.hard_state, model.hard_state);
    assert_eq!(rec.entries, model.after_marker());
    assert_eq!(wal.last_index(), model.last_index);
    wal
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), META, CONFIG).expect("create");
        let mut model = Model::default();
        for op in &ops {
            if matches!(op, Op::Reopen) {
                wal = reopen(dir.path(), wal, &model);
            } else {
                apply(&mut wal, &mut model, op);
            }
        }
        reopen(dir.path(), wal, &model).close().expect("close");
    }
}
