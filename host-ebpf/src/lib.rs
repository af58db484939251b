//! The eBPF side of the capture agent: programs that follow every TCP
//! socket's life and emit one flow record when it closes. `no_std`; built for
//! `bpfel-unknown-none` by the agent's build once the capture-agent issue lands.

#![no_std]
