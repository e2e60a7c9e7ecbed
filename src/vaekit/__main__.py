"""``python -m vaekit`` (and ``torchrun ... -m vaekit train ...``)."""

import sys

from .cli import main

sys.exit(main())
