//! What a simulation injects: [`Faults`], one switch or rate per kind of
//! fault, and the named mixes `cargo xtask sim --faults MIX` selects.

/// The faults of one run. A rate of 0 (or a count of 0) turns a kind off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Percentage of messages dropped.
    pub drop_percent: u64,
    /// Percentage of messages delivered twice.
    pub duplicate_percent: u64,
    /// Percentage of messages that may overtake earlier ones on their link
    /// (otherwise each link delivers in order, as one connection does).
    pub reorder_percent: u64,
    /// Percentage of steps that start a partition (when none is in place):
    /// one node cut off both ways, or only its outbound or only its inbound
    /// links, for 20 to 79 steps.
    pub partition_percent: u64,
    /// Percentage of snapshot transfers that fail midway: lost, or delivered
    /// while the sender hears of a failure (the connection broke after the
    /// last byte). Either way the sender is told the transfer failed.
    pub snapshot_fail_percent: u64,
    /// Crashes per run (power loss: what was not synced may be lost), half
    /// between two turns of the node, half in the middle of a turn, at an
    /// fsync (what the turn sent before it is out; what it wrote is not
    /// durable).
    pub crashes: u64,
    /// A crash tears unsynced writes by 512-byte sector (and keeps a random
    /// prefix of unsynced directory changes) instead of losing them whole.
    pub torn_writes: bool,
    /// fsync failures (`EIO`) per run: the node must stop, and is restarted
    /// (its unsynced pages may be gone, as Linux may drop them).
    pub sync_failures: u64,
    /// Percentage of steps at which one node's disk turns slow: the node is
    /// stuck in its fsync for 3 to 22 steps (what it would send after the
    /// fsync leaves only then; what arrives waits).
    pub slow_disk_percent: u64,
    /// Crashes per run after which one bit of the WAL's newest segment is
    /// flipped on the platter before the restart. Recovery must refuse it;
    /// the node is then repaired: removed from the cluster, wiped and added
    /// again.
    pub bit_flips: u64,
    /// Membership changes per run: remove a member, then add a fresh node,
    /// or the removed id again with a fresh disk.
    pub membership_changes: u64,
}

/// The mixes, by name, for `--faults MIX`.
pub const FAULT_MIXES: [&str; 6] = ["none", "classic", "network", "disk", "membership", "all"];

impl Faults {
    /// No faults at all.
    pub const NONE: Faults = Faults {
        drop_percent: 0,
        duplicate_percent: 0,
        reorder_percent: 0,
        partition_percent: 0,
        snapshot_fail_percent: 0,
        crashes: 0,
        torn_writes: false,
        sync_failures: 0,
        slow_disk_percent: 0,
        bit_flips: 0,
        membership_changes: 0,
    };

    /// The mix named `name` (one of [`FAULT_MIXES`]):
    /// * `classic`: drops, duplicates, partitions and whole-loss crashes;
    /// * `network`: drops, duplicates, reordering, partitions and failed
    ///   snapshot transfers;
    /// * `disk`: torn-write crashes, fsync failures, slow disks, bit flips;
    /// * `membership`: removals and additions, with a crash and some drops;
    /// * `all`: everything.
    pub fn mix(name: &str) -> Option<Faults> {
        let classic = Faults {
            drop_percent: 3,
            duplicate_percent: 2,
            partition_percent: 1,
            crashes: 2,
            ..Faults::NONE
        };
        let network = Faults {
            drop_percent: 5,
            duplicate_percent: 3,
            reorder_percent: 10,
            partition_percent: 2,
            snapshot_fail_percent: 30,
            ..Faults::NONE
        };
        let disk = Faults {
            crashes: 3,
            torn_writes: true,
            sync_failures: 2,
            slow_disk_percent: 2,
            bit_flips: 1,
            ..Faults::NONE
        };
        let membership = Faults {
            drop_percent: 2,
            crashes: 1,
            membership_changes: 3,
            ..Faults::NONE
        };
        Some(match name {
            "none" => Faults::NONE,
            "classic" => classic,
            "network" => network,
            "disk" => disk,
            "membership" => membership,
            "all" => Faults {
                drop_percent: 3,
                duplicate_percent: 2,
                reorder_percent: 5,
                partition_percent: 1,
                snapshot_fail_percent: 20,
                crashes: 2,
                torn_writes: true,
                sync_failures: 1,
                slow_disk_percent: 1,
                bit_flips: 1,
                membership_changes: 2,
            },
            _ => return None,
        })
    }
}

impl Default for Faults {
    /// The `all` mix.
    fn default() -> Faults {
        Faults::mix("all").expect("a mix of that name exists")
    }
}
