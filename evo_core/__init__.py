"""Shared core of both searches: model pool, study loop, tracking, export helpers."""
