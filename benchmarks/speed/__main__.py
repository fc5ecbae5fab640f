"""``python -m benchmarks.speed``: see ``benchmarks.speed``."""
import sys

from benchmarks.speed.cli import main

sys.exit(main())
