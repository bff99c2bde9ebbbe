"""Object-store fixtures (local directory, moto in-process, moto over HTTP) and shared test helpers.

Fixtures (registered for the whole suite from tests/conftest.py):

* ``local_store``  - a ``LocalStore`` in a fresh ``tmp_path`` directory (the store of a test that needs only a
  local one);
* ``module_local_store`` - a ``LocalStore`` shared by one module's tests (costly inputs written once);
* ``aws_env``      - fake credentials and region in the environment, nothing inherited from the host;
* ``moto_s3_client`` / ``moto_store`` - moto in-process (``mock_aws``) with bucket ``BUCKET``;
* ``moto_server``  - one ``fave.local.s3server.S3Server`` (moto over HTTP, writes serialised) per session on
  127.0.0.1 (random port), yields its URL;
* ``server_s3_client`` / ``server_store`` - a client and an ``S3Store`` on that server, state reset first;
* ``store``        - parametrized over ``STORE_BACKENDS`` (local, moto): write one test, run it on both.

In-process moto does not serialise concurrent requests (a compare-and-swap race can lose updates there), so
concurrency tests use ``server_store``, which does.

moto and boto3 are imported inside the fixtures, so test sessions that never use them do not pay for them.
"""

from __future__ import annotations

import contextlib
import functools
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fave_shared.errors import ConflictError
from fave_shared.store import LocalStore, ObjectStore, S3Store, get_json, put_json

if TYPE_CHECKING:
    import boto3
    from types_boto3_s3 import S3Client

BUCKET = "fave-test"
REGION = "us-east-1"
#: Backends of the parametrized ``store`` fixture (the contract suite adds "server").
STORE_BACKENDS = ["local", "moto"]

_FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
# Host settings that would redirect or break a test client (a profile that does not exist here, an
# endpoint pointing at some other emulator, a config file with retries or credentials processes).
_HOST_AWS_ENV = ["AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake AWS credentials and region ``us-east-1``; the host's AWS profile, endpoints and files ignored."""
    for name in _HOST_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in _FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    missing = str(tmp_path / "no-aws-config")
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    """A ``LocalStore`` rooted at ``tmp_path / "store"`` (created on first write)."""
    return LocalStore(tmp_path / "store")


@pytest.fixture(scope="module")
def module_local_store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    """A ``LocalStore`` shared by the tests of one module: what they read is costly to make, so it is made once
    (the media stage tests' clips and model outputs)."""
    return LocalStore(tmp_path_factory.mktemp("store"))


@functools.cache
def boto_session() -> boto3.session.Session:
    """One boto3 session for the test run: a new session reloads the service model (~0.2 s a client)."""
    import boto3

    return boto3.session.Session(region_name=REGION)


def make_s3_client(endpoint: str | None = None, *, max_pool_connections: int = 32, **config: Any) -> S3Client:
    """An S3 client with fake credentials (nothing read from the environment), optionally on ``endpoint``.

    Extra keyword arguments go to ``botocore.config.Config`` (``retries=``, ``connect_timeout=``...).
    """
    from botocore.config import Config

    return boto_session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(max_pool_connections=max_pool_connections, **config),
    )


@pytest.fixture
def moto_s3_client(aws_env: None) -> Iterator[S3Client]:
    """A boto3 S3 client inside moto's in-process ``mock_aws``, with bucket ``BUCKET`` created."""
    from moto import mock_aws

    with mock_aws():
        client = make_s3_client()
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def moto_store(moto_s3_client: S3Client) -> S3Store:
    """An ``S3Store`` on bucket ``BUCKET`` of in-process moto (fast; not safe for concurrency tests)."""
    return S3Store(moto_s3_client, BUCKET)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """The endpoint URL (``http://127.0.0.1:PORT``) of an ``S3Server`` shared by the session.

    Tests that use it must reset its state first (``server_s3_client`` does, via ``POST /moto-api/reset``).
    """
    from fave.local.s3server import S3Server

    # fave's own local endpoint (what `fave serve` runs): moto over HTTP with its writes serialised, since
    # moto's conditional PUT alone is check-then-act and lost an update under threads once.
    with S3Server("127.0.0.1", 0) as server:  # port 0: a free port
        yield server.url


@contextlib.contextmanager
def threaded_moto_server() -> Iterator[str]:
    """moto's ``ThreadedMotoServer`` in this process, on a free port: its endpoint URL. It shares moto's backends
    with ``mock_aws`` in this process (what a test's own server is for, rather than the session's ``moto_server``)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset_moto_server(endpoint: str) -> None:
    """Forget every bucket and object the moto server at ``endpoint`` holds."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@pytest.fixture(scope="session")
def _moto_server_client(moto_server: str) -> S3Client:
    return make_s3_client(moto_server)


@pytest.fixture
def server_s3_client(moto_server: str, _moto_server_client: S3Client, aws_env: None) -> S3Client:
    """A boto3 S3 client for ``moto_server``, after a state reset, with bucket ``BUCKET`` created."""
    reset_moto_server(moto_server)
    _moto_server_client.create_bucket(Bucket=BUCKET)
    return _moto_server_client


@pytest.fixture
def server_store(server_s3_client: S3Client) -> S3Store:
    """An ``S3Store`` on bucket ``BUCKET`` of ``moto_server`` (real HTTP; conditional writes are atomic)."""
    return S3Store(server_s3_client, BUCKET)


@pytest.fixture(params=STORE_BACKENDS)
def store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each backend in turn (``local``, then ``moto``): one test body, run against every store."""
    backend: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return backend


# -- helpers shared by the contract and concurrency suites ---------------------------------------------


def cas_increment(store: ObjectStore, key: str, worker: str, count: int, max_attempts: int = 500) -> int:
    """Increment the JSON counter at ``key`` ``count`` times by compare-and-swap; return the conflicts seen.

    The counter is ``{"n": int, "log": [str]}``; each successful increment appends ``"worker:i"`` to the log,
    so a lost update shows up as a count mismatch *and* as a missing log entry.
    """
    conflicts = 0
    for i in range(count):
        for _ in range(max_attempts):
            value, etag = get_json(store, key)
            value["n"] += 1
            value["log"].append(f"{worker}:{i}")
            try:
                put_json(store, key, value, if_match=etag)
            except ConflictError:
                conflicts += 1
                continue
            break
        else:
            raise AssertionError(f"{worker}: increment {i} lost {max_attempts} races in a row")
    return conflicts


def local_cas_worker(root: str, key: str, worker: str, count: int) -> int:
    """``cas_increment`` on ``LocalStore(root)``: a picklable entry point for spawned processes."""
    return cas_increment(LocalStore(root), key, worker, count)


def local_create_worker(root: str, keys: list[str], worker: str) -> list[str]:
    """Try to create each of ``keys`` in ``LocalStore(root)`` with ``if_none_match``; return those won."""
    store = LocalStore(root)
    won = []
    for key in keys:
        try:
            store.put(key, worker.encode(), if_none_match=True)
        except ConflictError:
            continue
        won.append(key)
    return won
