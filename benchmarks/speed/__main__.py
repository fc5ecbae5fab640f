"""``python -m benchmarks.speed``: see ``benchmarks.speed``."""
import sys

from .cli import main

sys.exit(main())
