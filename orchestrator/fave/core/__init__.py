"""The pure core: decisions only (model, DAG policies, engine). Standard library and ``immutables`` only:
no I/O, no clock, no pydantic, no yaml (tests/unit/test_layers.py enforces it)."""
