"""Tasks: what the CLI commands do, as plain functions."""
