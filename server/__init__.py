"""Flower server side: the ServerApp and the round loop; the in-process engine (inprocess/) and
the deployed SuperLink's gate (deploy/) in their own subpackages."""
