"""Tracing, metrics and log hygiene, configured once per process."""
