"""Tongban."""
