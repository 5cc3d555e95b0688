"""``python -m edr.doctor``: the same as ``edr doctor``."""

import sys

from edr.doctor.cli import main

sys.exit(main())
