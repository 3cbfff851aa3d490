"""`python -m sft`."""

import sys

from sft.cli import main

if __name__ == "__main__":
    sys.exit(main())
