"""``python -m autoq`` is the ``autoq`` command."""

import sys

from autoq.cli import main

sys.exit(main())
