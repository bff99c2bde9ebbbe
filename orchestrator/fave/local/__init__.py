"""The local Lambda emulator and its wiring: execution environments for template.yaml's functions on this
machine (runtime, pool, environment, worker, timer), the SAM template reader, fault injection, and the local
orchestrator. Never shipped to Lambda; imported only by ``fave.cli`` and tests."""
