"""Code shared by the orchestrator and every stage function (deployed as a Lambda layer)."""
