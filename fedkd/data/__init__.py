"""Datasets and their federated splits."""
