"""Fusion services: dispatcher, panel worker, judge, and the `fusion` command."""
