//! QUIC transport between agents and collectors (work in progress).
