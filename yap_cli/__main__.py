"""`python -m yap_cli` runs the `yap` command."""

import sys

from .main import main

sys.exit(main())
