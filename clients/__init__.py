"""Flower client side: the ClientApp and its message handlers."""
