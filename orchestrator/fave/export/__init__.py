"""Export a pipeline to another engine's definition (``fave export``): pure functions from a loaded
``fave.core.dag.Pipeline`` to plain data; the CLI (``fave.cli.export``) writes it."""
