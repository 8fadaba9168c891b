"""Demonstration datasets: collection, on-disk format, validation, chunking."""
