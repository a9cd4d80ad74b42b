"""``python -m flows`` runs the ramanscreen CLI."""

from flows.cli import main

main()
