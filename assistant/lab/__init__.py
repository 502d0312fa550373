"""Offline work on the model and the system: corpus, evaluation, load test, baseline model."""
