"""`python -m alviz ...` is the same as the `alviz` command."""

import sys

from .cli import main

sys.exit(main())
