"""Entry point of `python -m nanobanana_async.emulator`."""

import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
