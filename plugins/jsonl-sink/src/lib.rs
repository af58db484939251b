//! Sink plugin (work in progress).
