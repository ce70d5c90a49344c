"""The `fusion` command."""
