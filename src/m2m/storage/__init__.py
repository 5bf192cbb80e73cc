"""Storage: SQLite as the source of truth, validation, filters and the in-memory mirror."""
