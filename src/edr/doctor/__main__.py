"""``python -m edr.doctor``: the same as ``edr doctor``."""

import sys

from edr.doctor.cli import main

if __name__ == "__main__":  # importing the module (as tools that walk every module do) runs nothing
    sys.exit(main())
