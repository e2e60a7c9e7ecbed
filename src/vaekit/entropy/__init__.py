"""Entropy models (float, for training), integer probability tables (for coding),
the constriction-based coder and the ``.vkc`` container."""
