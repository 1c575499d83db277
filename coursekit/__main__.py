"""``python -m coursekit`` runs the ``coursekit`` command."""
import sys

from .cli import main

sys.exit(main())
