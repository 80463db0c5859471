"""``python -m autoq`` is the ``autoq`` command."""

import sys

from autoq.checkout import unshadow_installed_packages

unshadow_installed_packages()  # run in a checkout, its kernels/ folder stood in for Hugging Face's kernels package

from autoq.cli import main  # noqa: E402 - after the checkout's root is off sys.path

if __name__ == "__main__":  # not when a spawned worker process imports this module (see autoq.kernels.precompile)
    sys.exit(main())
