//! The core settings the tests share; each test changes what it is about.
#![allow(dead_code)] // Each test crate uses a different part.

use std::{collections::HashSet, time::Duration};

use flowattr_collector::core::CoreSettings;

/// A lone `collector-1` with `workers`, the JSON-lines sink in calls of
/// 1,024 flows, a 5 s hold and the default bounds.
pub fn core_settings(workers: usize) -> CoreSettings {
    CoreSettings {
        name: "collector-1".into(),
        incarnation: 1,
        hold: Duration::from_secs(5),
        silent_after: Duration::from_secs(60),
        max_held_flows: 100_000,
        remember_batches: 1000,
        sink: "jsonl-sink".into(),
        sink_batch: 1024,
        workers,
        forward_peers: HashSet::new(),
        shadow_hold: Duration::ZERO,
        arrival_queue_batches: 256,
        arrival_queue_bytes: 256 << 20,
        refuse_unclaimed_agents: true,
    }
}
