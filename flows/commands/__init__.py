"""CLI commands, one module per stage; each registers on :data:`flows.cli.app`."""
