"""Flower server side: the ServerApp, the round loop and an in-process Grid."""
