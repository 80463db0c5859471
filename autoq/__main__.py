"""``python -m autoq`` is the ``autoq`` command."""

import sys

from autoq.cli import main

if __name__ == "__main__":  # not when a spawned worker process imports this module (see autoq.kernels.precompile)
    sys.exit(main())
