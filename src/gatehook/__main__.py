"""``python -m gatehook`` runs the CLI."""

from gatehook.cli import main

main()
