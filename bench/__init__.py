"""bench: how fast, and how faithfully, inference engines run vision models."""

__version__ = "0.1.0"
