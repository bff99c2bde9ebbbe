"""Test-wide configuration. Fixtures live in tests/support/ modules, registered here."""

pytest_plugins = [
    "support.stores",
    "support.functions",
    "support.tiers",
    "support.iam",
    "support.app_lambda",
    "support.templates",
]
