"""The frame-size rule every WebSocket route applies (`frames.oversize_bytes`)."""

from __future__ import annotations

import pytest

from yap_server import frames


@pytest.mark.parametrize(
    ("text", "limit", "size"),
    [
        ("a" * 10, 10, None),  # exactly at the limit
        ("a" * 11, 10, 11),  # over by characters alone
        ("é" * 5, 10, None),  # 10 bytes in 5 characters: the encoding decides, and it fits
        ("é" * 6, 10, 12),  # 6 characters, 12 bytes: over only once encoded
        ("😀" * 3, 12, None),  # 4-byte characters at the limit
        ("😀" * 3 + "a", 12, 13),
    ],
)
def test_a_frame_is_over_the_limit_by_its_utf8_bytes(text: str, limit: int, size: int | None) -> None:
    assert frames.oversize_bytes(text, limit) == size
