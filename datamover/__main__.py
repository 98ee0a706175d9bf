"""``python -m datamover`` runs the CLI."""

import sys

from datamover.cli import main

sys.exit(main())
