"""Tongban wire API packages."""
