"""Fitness functions, registered by name."""
