"""The `arbiter` command line: one module per group of verbs, `main` parses and dispatches."""

from arbiter.server.cli.main import main

__all__ = ["main"]
