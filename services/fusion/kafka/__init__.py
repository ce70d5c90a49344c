"""Kafka plumbing shared by the services: broker, codec, dead letters, topics, reply correlation."""
