//! The capture agent (`flowattr agent`): loads the eBPF programs of
//! `host-ebpf`, turns kernel events into flow records, attributes each flow's
//! local side at capture time through the identity plugin chain, runs policy
//! plugins, and ships batches to collectors over QUIC.
//!
//! The agent is built by the capture-agent issue; this crate holds its place
//! in the workspace layout so the architecture is visible from the start.
