"""What the concurrency contracts share: ``shared_store``, a store whose conditional writes are atomic under
concurrency (the local store and the moto server; LocalStack alone on tier localstack)."""

from __future__ import annotations

import pytest
from fave_shared.store import ObjectStore
from support.tiers import contract_backends


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Parametrized here rather than by fixture params, which are fixed before the command line (--tier) is read.
    if "shared_store" in metafunc.fixturenames:
        metafunc.parametrize("shared_store", contract_backends(metafunc.config, ["local", "server"]), indirect=True)


@pytest.fixture
def shared_store(request: pytest.FixtureRequest) -> ObjectStore:
    backend: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return backend
