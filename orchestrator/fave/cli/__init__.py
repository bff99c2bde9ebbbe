"""The ``fave`` command (``fave.cli.main``) and what only it uses: benchmarks, chaos, progress, graphs."""
