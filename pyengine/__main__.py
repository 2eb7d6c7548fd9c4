"""`python -m pyengine ...` is the `pyengine` command."""

import sys

from .cli import main

sys.exit(main())
