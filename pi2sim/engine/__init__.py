"""Timing engine: device component models, the work plan vocabulary, and the tiers that execute it."""
