"""Yap server."""
