//! Throughput between two transports on loopback: heartbeat-sized messages, and 1 KiB append
//! entries batched into MsgAppend messages as raft-rs sends them. Run: `cargo bench -p transport`.
#![allow(clippy::print_stdout)]

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_proto::eraftpb::{Entry, Message, MessageType};
use transport::{Delivery, Overloaded, SnapshotStatus, Transport, TransportConfig};

const CLUSTER_ID: u64 = 1;

/// Counts what arrives and throws it away.
#[derive(Default)]
struct Counter {
    msgs: AtomicU64,
    entry_bytes: AtomicU64,
}

impl Delivery for Counter {
    fn deliver(&self, msgs: Vec<Message>) -> Result<(), Overloaded> {
        let payload: usize = msgs
            .iter()
            .flat_map(|m| &m.entries)
            .map(|e| e.data.len())
            .sum();
        self.entry_bytes
            .fetch_add(payload as u64, Ordering::Relaxed);
        self.msgs.fetch_add(msgs.len() as u64, Ordering::Release);
        Ok(())
    }
    fn report_unreachable(&self, _peer_id: u64) {}
    fn report_snapshot(&self, _peer_id: u64, _status: SnapshotStatus) {}
}

struct Scenario {
    name: &'static str,
    total_msgs: u64,
    chunk_msgs: u64,
    window_msgs: u64,
    make: fn(u64) -> Message,
}

fn heartbeat(seq: u64) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgHeartbeat);
    (msg.from, msg.to, msg.term, msg.commit) = (1, 2, 9, seq);
    msg
}

const ENTRIES_PER_APPEND: u64 = 32;
const ENTRY_BYTES: usize = 1024;

fn append(seq: u64) -> Message {
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgAppend);
    (msg.from, msg.to, msg.term) = (1, 2, 9);
    (msg.index, msg.log_term, msg.commit) = (seq * ENTRIES_PER_APPEND, 9, seq * ENTRIES_PER_APPEND);
    msg.entries = (0..ENTRIES_PER_APPEND)
        .map(|i| {
            let mut entry = Entry::default();
            (entry.index, entry.term) = (seq * ENTRIES_PER_APPEND + i + 1, 9);
            entry.data = vec![(i % 251) as u8; ENTRY_BYTES];
            entry
        })
        .collect();
    msg
}

/// Sends `total_msgs` from a plain thread (like the Raft loop), keeping at most
/// `window_msgs` unreceived so the bounded queue never drops.
fn drive(sender: &Transport, counter: &Counter, s: &Scenario) -> Duration {
    let base = counter.msgs.load(Ordering::Acquire);
    let start = Instant::now();
    let mut sent = 0;
    while sent < s.total_msgs {
        while sent - (counter.msgs.load(Ordering::Acquire) - base) > s.window_msgs {
            std::thread::yield_now();
        }
        let end = (sent + s.chunk_msgs).min(s.total_msgs);
        sender.send((sent..end).map(s.make).collect());
        sent = end;
    }
    while counter.msgs.load(Ordering::Acquire) - base < s.total_msgs {
        std::thread::yield_now();
    }
    start.elapsed()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let counter = Arc::new(Counter::default());
    let (sender, receiver_url) = runtime.block_on(async {
        let receiver = Transport::new(TransportConfig::new(2, CLUSTER_ID), counter.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(axum::serve(listener, receiver.router()).into_future());
        let sender = Transport::new(
            TransportConfig::new(1, CLUSTER_ID),
            Arc::new(Counter::default()),
        );
        Ok::<_, std::io::Error>((sender, url))
    })?;
    sender.add_peer(2, &receiver_url)?;
    let scenarios = [
        Scenario {
            name: "heartbeat",
            total_msgs: 3_000_000,
            chunk_msgs: 256,
            window_msgs: 4096,
            make: heartbeat,
        },
        Scenario {
            name: "append 32x1KiB",
            total_msgs: 16_384,
            chunk_msgs: 4,
            window_msgs: 128,
            make: append,
        },
    ];
    for s in &scenarios {
        let warmup = Scenario {
            total_msgs: s.total_msgs / 10,
            ..*s
        };
        drive(&sender, &counter, &warmup);
        let bytes_before = sender.stats().peers[&2].bytes_sent;
        let payload_before = counter.entry_bytes.load(Ordering::Relaxed);
        let elapsed = drive(&sender, &counter, s);
        let secs = elapsed.as_secs_f64();
        let wire_mb = (sender.stats().peers[&2].bytes_sent - bytes_before) as f64 / 1e6;
        let payload_mb =
            (counter.entry_bytes.load(Ordering::Relaxed) - payload_before) as f64 / 1e6;
        println!(
            "{:<16} {:>9} msgs in {:>6.3} s: {:>10.0} msgs/s, wire {:>7.1} MB/s, entry payload {:>7.1} MB/s",
            s.name, s.total_msgs, secs, s.total_msgs as f64 / secs, wire_mb / secs, payload_mb / secs
        );
    }
    let peer = &sender.stats().peers[&2];
    println!(
        "dropped {} send failures {}",
        peer.msgs_dropped, peer.send_failures
    );
    Ok(())
}
