"""fedkd core: pure numpy/torch federated knowledge fusion (never imports flwr)."""

__version__ = "0.1.0"
