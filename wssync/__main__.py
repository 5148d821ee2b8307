"""``python -m wssync``: see :mod:`wssync.cli`."""

import sys

from .cli import main

sys.exit(main())
