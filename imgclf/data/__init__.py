"""Data: sources (folders, CSVs, built-in datasets), decoding, splits, decoded tensors and batches."""
