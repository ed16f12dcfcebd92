"""`python -m genesis` runs the command line."""

from genesis.cli import app

app(prog_name="genesis")
