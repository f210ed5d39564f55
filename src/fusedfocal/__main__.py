"""``python -m fusedfocal``: the command line (see :mod:`fusedfocal.cli`)."""

import sys

from fusedfocal.cli import main

if __name__ == "__main__":
    sys.exit(main())
