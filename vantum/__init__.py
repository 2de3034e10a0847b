"""Vantum: a real-time voice AI server built on trio's structured concurrency."""

__version__ = "0.1.0"
