//! The capture agent (`flowattr agent`): loads the eBPF programs of
//! `host-ebpf`, turns kernel records into flow records, attributes each
//! flow's local side at capture time through the identity plugin chain, runs
//! policy plugins, and writes batches out.

pub mod capture;
