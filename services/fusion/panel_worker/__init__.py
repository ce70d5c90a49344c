"""The panel worker: calls one member's model per task, many at once, and reports the outcome."""
