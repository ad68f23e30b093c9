"""`python -m alviz ...` is the same as the `alviz` command."""

import sys

if __name__ == "__main__":  # not when a spawned worker process imports the parent's main module
    from .cli import main

    sys.exit(main())
