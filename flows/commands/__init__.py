"""CLI commands, one module per stage; each registers on :data:`ramanscreen.flows.cli.app`."""
