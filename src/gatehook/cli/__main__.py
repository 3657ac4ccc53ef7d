"""``python -m gatehook.cli``."""

from gatehook.cli import main

main()
