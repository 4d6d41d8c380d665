"""Fernet (`cryptography`) for `/ws/completions`: message contents in, result content and thinking out.

With `ORCH_ENCRYPTION_KEY` set, each `messages[].content` of a request is a Fernet token and the
result's `content` and `thinking` come back as Fernet tokens under the same key. Generate a key
with `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
"""

from __future__ import annotations

from typing import Any


class DecryptionError(ValueError):
    """A value is not a Fernet token for this key; the message says which value."""


def check_fernet_key(key: str) -> None:
    """Raise `ValueError` (naming `ORCH_ENCRYPTION_KEY`) unless `key` is a valid Fernet key."""
    from cryptography.fernet import Fernet

    try:
        Fernet(key.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(
            "ORCH_ENCRYPTION_KEY is not a Fernet key (32 url-safe base64-encoded bytes); "
            "generate one with cryptography.fernet.Fernet.generate_key()"
        ) from exc


class ContentCipher:
    """Encrypts and decrypts text with one Fernet key."""

    def __init__(self, key: str) -> None:
        from cryptography.fernet import Fernet

        self._fernet = Fernet(key.encode())

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, token: Any, where: str) -> str:
        """The text of Fernet token `token`; `where` names the value in the error (e.g. messages[0].content)."""
        from cryptography.fernet import InvalidToken

        if not isinstance(token, str):
            raise DecryptionError(f"{where} must be a Fernet token (a string), got {type(token).__name__}")
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            raise DecryptionError(
                f"{where} is not a Fernet token under this server's ORCH_ENCRYPTION_KEY: encrypt it with that key"
            ) from None
