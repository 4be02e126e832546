"""Data sources: each turns some on-disk layout into canonical records."""
