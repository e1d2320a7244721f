"""``python -m nanobanana_async`` runs the ``nanobanana-async`` command."""

import sys

from .cli import main

sys.exit(main())
