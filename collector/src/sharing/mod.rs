//! Ownership sharing through Kafka (in progress).
