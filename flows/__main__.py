"""``python -m flows`` runs the ramanscreen CLI."""

from ramanscreen.flows.cli import main

main()
