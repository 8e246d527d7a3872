"""Scores: classification and multi-label metrics, the training-curve diagnosis, which way a monitor is better."""
