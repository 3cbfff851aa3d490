"""`python -m vla`."""

import sys

from vla.cli import main

if __name__ == "__main__":
    sys.exit(main())
