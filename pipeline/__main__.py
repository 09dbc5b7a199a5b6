"""`python -m pipeline` is the same as the `crispml` command."""

from pipeline.cli import entry

entry()
