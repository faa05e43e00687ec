//! Property tests: arbitrary damage never yields an invalid record or a panic.

mod common;

use std::fs;

use common::{copy_dir, entries, hard_state, record_spans, segments, META, SMALL};
use proptest::prelude::*;
use wal::{Entry, Marker, Wal};

fn build(dir: &std::path::Path) -> Vec<Entry> {
    let mut wal = Wal::create(dir, META, SMALL).expect("create");
    let all = entries(1..=120, 1);
    for (n, batch) in all.chunks(6).enumerate() {
        wal.save(Some(&hard_state(n as u64)), batch).expect("save");
    }
    wal.close().expect("close");
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Overwriting bytes of a segment: an older segment is always refused; the newest one is
    /// refused or yields a prefix of what was written.
    #[test]
    fn damage_is_refused_or_cut_at_the_tail(
        segment_pick in any::<prop::sample::Index>(),
        offset_pick in any::<prop::sample::Index>(),
        garbage in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let base = tempfile::tempdir().expect("tempdir");
        let (original, dir) = (base.path().join("original"), base.path().join("damaged"));
        let written = build(&original);
        copy_dir(&original, &dir);
        let paths = segments(&dir);
        let i = segment_pick.index(paths.len());
        let mut bytes = fs::read(&paths[i]).expect("read");
        let data_end = record_spans(&bytes).last().expect("records").1;
        let at = offset_pick.index(data_end);
        let end = (at + garbage.len()).min(bytes.len());
        let before = bytes[at..end].to_vec();
        bytes[at..end].copy_from_slice(&garbage[..end - at]);
        prop_assume!(before != bytes[at..end]);
        fs::write(&paths[i], &bytes).expect("write");

        match Wal::open(&dir, Marker::ZERO, SMALL) {
            Ok((_wal, rec)) => {
                prop_assert_eq!(i, paths.len() - 1, "damage to an older segment must be refused");
                prop_assert_eq!(&rec.entries[..], &written[..rec.entries.len()]);
            }
            Err(e) => {
                let names_file = e.to_string().contains(&*paths[i].to_string_lossy());
                prop_assert!(names_file || i + 1 < paths.len(), "{}", e);
            }
        }
    }

    /// A segment made of arbitrary bytes never panics the reader.
    #[test]
    fn arbitrary_segment_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("0000000000000000-0000000000000001.wal"), &bytes).expect("write");
        prop_assert!(Wal::open(dir.path(), Marker::ZERO, SMALL).is_err());
        prop_assert!(Wal::markers(dir.path()).is_err());
    }
}
