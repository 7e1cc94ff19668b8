"""Entry point for ``python -m scheduler``; the ``seqsweep`` console script is the same CLI."""

import sys

from scheduler.cli import main

sys.exit(main(prog="python -m scheduler"))
