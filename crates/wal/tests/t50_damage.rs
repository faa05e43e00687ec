//! Property tests: arbitrary damage never yields an invalid record or a panic.

mod common;

use std::fs;

use common::{copy_dir, entries, hard_state, record_spans, segments, META, SMALL};
use proptest::prelude::*;
use wal::{Corruption, Entry, Marker, Wal, WalConfig, WalError, TAIL_CHECK_BYTES_MAX};

fn build(dir: &std::path::Path) -> Vec<Entry> {
    let mut wal = Wal::create(dir, META, SMALL).expect("create");
    let all = entries(1..=120, 1);
    for (n, batch) in all.chunks(6).enumerate() {
        wal.save(Some(&hard_state(n as u64)), batch).expect("save");
    }
    wal.close().expect("close");
    all
}

/// True when the record holding byte `at` (framed as in the undamaged `spans`) has a chunk
/// from its start or a 512-byte boundary inside it to the end of that sector that is all zero
/// in `damaged`: what a write that never fully reached the disk leaves.
fn zero_sector_in_record(damaged: &[u8], spans: &[(usize, usize)], at: usize) -> bool {
    const SECTOR_BYTES: usize = 512;
    let Some(&(start, end)) = spans.iter().find(|&&(s, e)| (s..e).contains(&at)) else {
        return false;
    };
    let mut chunk_start = start;
    while chunk_start < end {
        let chunk_end = (chunk_start / SECTOR_BYTES + 1) * SECTOR_BYTES;
        if damaged[chunk_start..chunk_end.min(damaged.len())]
            .iter()
            .all(|&b| b == 0)
        {
            return true;
        }
        chunk_start = chunk_end;
    }
    false
}

/// A last record full of plausible record headers (a user value can hold any bytes), each
/// claiming a record that runs almost to the end of the segment, then a flipped bit in that
/// record: deciding whether it is torn must not re-hash every candidate (about 64 Ki
/// candidates of 8 MiB here, half a TiB), so the open is refused as not proven torn.
#[test]
fn planted_headers_after_a_damaged_record_do_not_make_open_unbounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = WalConfig {
        segment_bytes: 16 << 20,
    };
    let mut wal = Wal::create(dir.path(), META, config).expect("create");
    wal.save(Some(&hard_state(1)), &entries(1..=3, 1))
        .expect("save");
    let mut value = vec![0x11u8; 1 << 20];
    // The value starts 28 bytes into its 8-aligned record, so value offsets 4, 20, 36, ...
    // sit at 8-aligned file offsets.
    for at in (4..value.len() - 16).step_by(16) {
        value[at..at + 4].copy_from_slice(&(8u32 << 20).to_le_bytes());
        value[at + 4..at + 8].copy_from_slice(&[5, 0, 0, 0]);
    }
    let last = Entry {
        index: 4,
        term: 1,
        payload: value,
    };
    wal.save(None, std::slice::from_ref(&last)).expect("save");
    wal.close().expect("close");
    let victim = segments(dir.path()).pop().expect("segment");
    let mut bytes = fs::read(&victim).expect("read");
    let (start, _) = *record_spans(&bytes).last().expect("records");
    bytes[start + 8] ^= 1; // the stored CRC
    fs::write(&victim, &bytes).expect("write");
    match Wal::open(dir.path(), Marker::ZERO, config) {
        Err(WalError::Corrupt {
            path,
            offset,
            reason,
        }) => {
            assert_eq!(path, victim);
            assert_eq!(offset as usize, start);
            let Corruption::CheckBudgetExhausted { bytes } = reason else {
                panic!("expected the check to give up, got {reason:?}");
            };
            assert!(bytes <= TAIL_CHECK_BYTES_MAX, "{bytes}");
        }
        other => panic!("expected a corruption error, got {:?}", other.map(|_| ())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Overwriting bytes of a segment: an older segment is always refused; the newest one is
    /// refused, or yields a prefix of what was written that is shorter only when the damage
    /// left a whole 512-byte sector of the first damaged record zero (a torn write).
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
        let spans = record_spans(&bytes);
        let data_end = spans.last().expect("records").1;
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
                let shorter = rec.entries.len() < written.len()
                    || rec.hard_state.as_deref() != Some(&hard_state(19)[..]);
                prop_assert!(
                    !shorter || zero_sector_in_record(&bytes, &spans, at),
                    "a shorter prefix without a zeroed sector (damage at {})", at
                );
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
