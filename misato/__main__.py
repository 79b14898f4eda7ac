"""``python -m misato`` runs the command line."""
import sys

from misato.cli import main

sys.exit(main())
