"""Data: sources → canonical records → split → fingerprinted files in the run directory."""
