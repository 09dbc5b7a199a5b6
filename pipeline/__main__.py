"""`python -m pipeline` is the same as the `crispml` command."""

import sys

from pipeline.cli import main

sys.exit(main())
