"""Access model: which neurons are active, which the caches serve, which must be read. No clock."""
