//! Flows to a Kafka topic (in progress).
