"""Test-wide configuration. Fixtures live in tests/support/ modules, registered here."""

import os
import tempfile

# Parsed pipelines (fave.local.parsed) of this session, for it and the fave commands it starts, not the
# user's ~/.cache: the tests make thousands of pipelines. Still on, as for a user: hits and misses both run.
os.environ.setdefault("FAVE_CACHE_DIR", tempfile.mkdtemp(prefix="fave-test-cache-"))

pytest_plugins = [
    "support.stores",
    "support.functions",
    "support.tiers",
    "support.iam",
    "support.app_lambda",
    "support.templates",
]
