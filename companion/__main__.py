"""`python -m companion` runs the CLI."""

from .cli import main

main()
