"""`python -m wwwserve` runs the CLI."""

from wwwserve.cli import app

app()
