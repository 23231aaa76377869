"""Federation: the relay between nodes (handoff envelopes over Kafka) and its configuration."""
