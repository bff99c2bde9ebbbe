"""fave: the orchestrator (engine, executor, runtimes, CLI)."""
