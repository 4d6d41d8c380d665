"""Quantization and builds."""
