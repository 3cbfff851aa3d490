"""`python -m datasets_build`."""

import sys

from datasets_build.cli import main

if __name__ == "__main__":
    sys.exit(main())
