"""`python -m quant plan|build|push|env` (the same commands as `yap quant ...`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
