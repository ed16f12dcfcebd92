"""The command line: thin commands that parse, call the API and render."""

from genesis.cli.main import app

__all__ = ["app"]
