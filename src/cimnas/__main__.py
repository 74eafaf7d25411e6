"""`python -m cimnas ...` = the `cimnas` console script."""

import sys

from cimnas.cli import main

sys.exit(main())
