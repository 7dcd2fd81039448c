"""``python -m clipdfer.app``: the demo page, as ``clipdfer demo`` (and a Hugging Face Space's entry point)."""

import sys

from .serve import main

if __name__ == "__main__":
    sys.exit(main())
