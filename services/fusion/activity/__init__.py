"""Activity: every fused request, recorded once in a database (SQLite by default, PostgreSQL by URL)."""
