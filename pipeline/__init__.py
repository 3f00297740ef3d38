"""Scan batches in, searchable PDF/A records out: the pure processing library."""

__version__ = "0.1.0"
