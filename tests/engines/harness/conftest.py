"""Harness fixtures (defined in harness_support.py): Yap on loopback over a thinking script, a slow Yap,
and a stub that answers malformed SSE."""

from harness_support import capped_yap, malformed_stub, slow_yap, yap

__all__ = ["capped_yap", "malformed_stub", "slow_yap", "yap"]
