"""``python apps/deploy -i ... -o ... -m ...``: the MONAI Deploy application's entry point (see app.py)."""

import sys

from app import main

if __name__ == "__main__":
    sys.exit(main())
