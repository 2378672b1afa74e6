"""``python -m automix ...`` (and ``torchrun -m automix ...``) run the command line."""

import sys

from .cli import main

sys.exit(main())
