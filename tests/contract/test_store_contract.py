"""The object-store contract: one suite, every backend (local directory, moto in-process, moto over HTTP).

With ``--tier localstack`` the backend-parametrized tests run on LocalStack instead, and the rest is deselected
(support/tiers.py: ``contract_backends``); ``./dev test`` runs both.

Listing semantics are S3's: a prefix is a plain string prefix, so ``list("a/b")`` returns ``a/b/x`` *and*
``a/bc``; pass ``"a/b/"`` to list one "directory". Etags are opaque strings: the contract only promises that
the etag a put returns is the one a get/head then reports, and that a stale one makes ``if_match`` fail
(real S3 etags are not MD5s for KMS-encrypted objects, so only ``LocalStore`` tests pin the MD5 format).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fave_shared.errors import (
    ConflictError,
    FaveError,
    NotFoundError,
    RetryableError,
    TerminalError,
    ValidationError,
)
from fave_shared.store import (
    CountingStore,
    LocalStore,
    ObjectStore,
    S3Store,
    StoreStats,
    get_json,
    open_store,
    put_json,
    translate_error,
    validate_key,
    validate_prefix,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.stores import BUCKET, make_s3_client
from support.tiers import contract_backends

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

BACKENDS = ["local", "moto", "server"]
S3_BACKENDS = ["moto", "server"]

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../x",
    "a/../../b",
    "a/..",
    "..",
    ".",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "..\\..\\x",
    "a\x00b",
    "a\nb",
    "a\tb",
    "a\x7fb",
    "a\x85b",
    "\ud800",
    "k" * 1025,
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Parametrized here rather than by fixture params, which are fixed before the command line (--tier) is read.
    for fixture, backends in (("any_store", BACKENDS), ("s3_client", S3_BACKENDS)):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, contract_backends(metafunc.config, backends), indirect=True)


@pytest.fixture
def any_store(request: pytest.FixtureRequest) -> ObjectStore:
    """Every backend, including the HTTP moto server (or LocalStack alone, on tier localstack)."""
    backend: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return backend


@pytest.fixture
def s3_client(request: pytest.FixtureRequest) -> S3Client:
    """A client on each S3 emulator (bucket ``BUCKET`` exists)."""
    client: S3Client = request.getfixturevalue(f"{request.param}_s3_client")
    return client


# -- basic operations -----------------------------------------------------------------------------------


def test_round_trip(any_store: ObjectStore) -> None:
    etag = any_store.put("requests/r1/state.json", b'{"a":1}', content_type="application/json")
    blob = any_store.get("requests/r1/state.json")
    assert blob.data == b'{"a":1}'
    assert blob.etag == etag
    assert any_store.head("requests/r1/state.json") == etag
    assert etag.startswith('"') and etag.endswith('"')


def test_overwrite_changes_etag_and_data(any_store: ObjectStore) -> None:
    first = any_store.put("k", b"one")
    second = any_store.put("k", b"two")
    assert first != second
    assert any_store.get("k").data == b"two"
    assert any_store.head("k") == second


def test_missing_key(any_store: ObjectStore) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        any_store.get("dir/nope")
    assert any_store.head("dir/nope") is None
    assert list(any_store.list("dir/")) == []


def test_create_only_conflicts_when_present(any_store: ObjectStore) -> None:
    etag = any_store.put("once", b"first", if_none_match=True)
    with pytest.raises(ConflictError, match="once"):
        any_store.put("once", b"second", if_none_match=True)
    assert any_store.get("once").data == b"first"
    assert any_store.head("once") == etag


def test_if_match_current_etag_succeeds(any_store: ObjectStore) -> None:
    etag = any_store.put("cas", b"v1")
    new = any_store.put("cas", b"v2", if_match=etag)
    assert new != etag
    assert any_store.get("cas").data == b"v2"


def test_if_match_stale_etag_conflicts(any_store: ObjectStore) -> None:
    stale = any_store.put("cas", b"v1")
    any_store.put("cas", b"v2")
    with pytest.raises(ConflictError, match="cas"):
        any_store.put("cas", b"v3", if_match=stale)
    assert any_store.get("cas").data == b"v2"


def test_if_match_missing_key_is_not_found(any_store: ObjectStore) -> None:
    etag = any_store.put("gone", b"v1")
    any_store.delete("gone")
    with pytest.raises(NotFoundError, match="gone"):
        any_store.put("gone", b"v2", if_match=etag)
    assert any_store.head("gone") is None


def test_if_match_with_if_none_match_is_rejected(any_store: ObjectStore) -> None:
    etag = any_store.put("k", b"v")
    with pytest.raises(ValidationError):
        any_store.put("k", b"w", if_match=etag, if_none_match=True)
    assert any_store.get("k").data == b"v"


def test_delete_is_idempotent(any_store: ObjectStore) -> None:
    any_store.delete("never/existed")
    any_store.put("d/k", b"v")
    any_store.delete("d/k")
    with pytest.raises(NotFoundError):
        any_store.get("d/k")
    any_store.delete("d/k")
    assert list(any_store.list("")) == []


def test_create_only_after_delete_succeeds(any_store: ObjectStore) -> None:
    any_store.put("k", b"v1", if_none_match=True)
    any_store.delete("k")
    any_store.put("k", b"v2", if_none_match=True)
    assert any_store.get("k").data == b"v2"


# -- listing --------------------------------------------------------------------------------------------

LIST_KEYS = ["a/b/x", "a/b/y/z", "a/bc", "a-c", "a0", "b", "A", "a/b/\u00e9", "a/b/~", "\u00e4/x", "z"]


def test_list_is_lexicographic(any_store: ObjectStore) -> None:
    for key in random.Random(7).sample(LIST_KEYS, len(LIST_KEYS)):
        any_store.put(key, key.encode())
    assert list(any_store.list("")) == sorted(LIST_KEYS)


def test_list_prefix_is_a_plain_string_prefix(any_store: ObjectStore) -> None:
    for key in LIST_KEYS:
        any_store.put(key, b"")
    # "a/b" also matches "a/bc": S3 semantics. A trailing "/" selects one "directory".
    assert list(any_store.list("a/b")) == ["a/b/x", "a/b/y/z", "a/b/~", "a/b/\u00e9", "a/bc"]
    assert list(any_store.list("a/b/")) == ["a/b/x", "a/b/y/z", "a/b/~", "a/b/\u00e9"]
    assert list(any_store.list("a/b/y")) == ["a/b/y/z"]
    assert list(any_store.list("a")) == ["a-c", "a/b/x", "a/b/y/z", "a/b/~", "a/b/\u00e9", "a/bc", "a0"]
    assert list(any_store.list("zz")) == []
    assert list(any_store.list("q/")) == []


def test_list_rejects_unsafe_prefixes(any_store: ObjectStore) -> None:
    for prefix in ["/", "/a", "../", "a/../", "a//", "./", "a\\", "a\x00"]:
        with pytest.raises(ValidationError):
            any_store.list(prefix)  # raised at the call, not at the first next()


def test_list_accepts_partial_dot_segments(any_store: ObjectStore) -> None:
    # ".." is only dangerous as a whole segment; as the partial last segment it is an ordinary prefix.
    any_store.put("d/..hidden", b"")
    any_store.put("d/.x", b"")
    assert list(any_store.list("d/..")) == ["d/..hidden"]
    assert list(any_store.list("d/.")) == ["d/..hidden", "d/.x"]


# -- key validation -------------------------------------------------------------------------------------


def test_unsafe_keys_are_rejected_everywhere(any_store: ObjectStore) -> None:
    # One test per backend, looping: validation happens before any I/O, so per-key fixtures would only
    # add setup time. (Per-key ids are in test_validate_key_rejects.)
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("put", (b"x",), {}),
        ("put", (b"x",), {"if_none_match": True}),
        ("put", (b"x",), {"if_match": '"0"'}),
        ("get", (), {}),
        ("head", (), {}),
        ("delete", (), {}),
        ("link", (), {}),
    ]
    for key in BAD_KEYS:
        for method, args, kwargs in calls:
            with pytest.raises(ValidationError):
                getattr(any_store, method)(key, *args, **kwargs)
    assert list(any_store.list("")) == []


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_validate_key_rejects(key: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_key(key)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "key", ["a", "requests/r1/metadata/state.json", "..a", "a..", "a/.b", "x y/z", "\u00e9\u00e8", "k" * 1024]
)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


def test_validate_prefix() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("a/b") == "a/b"
    assert validate_prefix("a/") == "a/"
    assert validate_prefix("a/..") == "a/.."  # partial last segment
    for bad in ["/", "../", "a//b", "a/./", "\\"]:
        with pytest.raises(ValidationError):
            validate_prefix(bad)


def test_local_traversal_never_escapes_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    store = LocalStore(root)
    (tmp_path / "secret").write_bytes(b"outside")
    for key in ["../secret", "a/../../secret", "/" + str(tmp_path / "secret").lstrip("/")]:
        with pytest.raises(ValidationError):
            store.get(key)
        with pytest.raises(ValidationError):
            store.put(key, b"pwned")
        with pytest.raises(ValidationError):
            store.delete(key)
    assert (tmp_path / "secret").read_bytes() == b"outside"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret"]  # root not even created


# -- payloads -------------------------------------------------------------------------------------------


def test_binary_data(any_store: ObjectStore) -> None:
    data = bytes(range(256)) * 4 + random.Random(1).randbytes(4096)
    etag = any_store.put("bin/blob", data)
    assert any_store.get("bin/blob").data == data
    assert any_store.get("bin/blob").etag == etag


def test_empty_object(any_store: ObjectStore) -> None:
    etag = any_store.put("empty", b"")
    blob = any_store.get("empty")
    assert blob.data == b""
    assert blob.etag == etag
    assert list(any_store.list("")) == ["empty"]


def test_large_object(any_store: ObjectStore) -> None:
    data = random.Random(2).randbytes(5 * 1024 * 1024)
    etag = any_store.put("big/object.bin", data)
    blob = any_store.get("big/object.bin")
    assert blob.data == data
    assert blob.etag == etag


def test_bytearray_payload_is_accepted(any_store: ObjectStore) -> None:
    buf = bytearray(b"mutable")
    any_store.put("buf", buf)  # type: ignore[arg-type]  # callers sometimes pass bytearrays
    buf[:] = b"changed"
    assert any_store.get("buf").data == b"mutable"


def test_unicode_keys(any_store: ObjectStore) -> None:
    key = "r\u00e9sum\u00e9/\u65e5\u672c/\U0001f600 x.json"
    any_store.put(key, b"u")
    assert any_store.get(key).data == b"u"
    assert list(any_store.list("r\u00e9")) == [key]


# -- json helpers ---------------------------------------------------------------------------------------


def test_json_helpers(any_store: ObjectStore) -> None:
    value = {"b": [1, 2.5, None, True], "a": "\u00e9", "n": {"x": {}}}
    etag = put_json(any_store, "j/state.json", value, if_none_match=True)
    assert any_store.get("j/state.json").data == '{"b":[1,2.5,null,true],"a":"\u00e9","n":{"x":{}}}'.encode()
    got, got_etag = get_json(any_store, "j/state.json")
    assert got == value
    assert got_etag == etag
    new = put_json(any_store, "j/state.json", {**value, "b": []}, if_match=etag)
    with pytest.raises(ConflictError):
        put_json(any_store, "j/state.json", value, if_match=etag)
    assert get_json(any_store, "j/state.json") == ({**value, "b": []}, new)


def test_json_helpers_reject_bad_values(any_store: ObjectStore) -> None:
    with pytest.raises(ValidationError):
        put_json(any_store, "j/bad.json", {"x": object()})
    with pytest.raises(ValidationError):
        put_json(any_store, "j/bad.json", {"x": float("nan")})
    any_store.put("j/text.json", b"not json {")
    with pytest.raises(ValidationError, match=r"text\.json"):
        get_json(any_store, "j/text.json")
    with pytest.raises(NotFoundError):
        get_json(any_store, "j/bad.json")


# -- links, uris, counting ------------------------------------------------------------------------------


def test_link_format(any_store: ObjectStore) -> None:
    any_store.put("dir/with space.json", b"{}")
    link = any_store.link("dir/with space.json")
    if isinstance(any_store, LocalStore):
        assert link == (any_store.root / "dir" / "with space.json").as_uri()
        assert link.startswith("file:///") and "with%20space.json" in link
        assert Path(any_store.uri, "dir", "with space.json").read_bytes() == b"{}"
    else:
        assert link == f"s3://{BUCKET}/dir/with space.json"


def test_uri_reopens_the_same_store(any_store: ObjectStore) -> None:
    any_store.put("x/y", b"same")
    client = any_store.client if isinstance(any_store, S3Store) else None
    reopened = open_store(any_store.uri, s3_client=client)
    assert type(reopened) is type(any_store)
    assert reopened.uri == any_store.uri
    assert reopened.get("x/y").data == b"same"


def test_counting_store(any_store: ObjectStore) -> None:
    counted = CountingStore(any_store)
    assert counted.uri == any_store.uri
    assert isinstance(counted, ObjectStore)
    etag = counted.put("c/a", b"12345")
    counted.get("c/a")
    counted.head("c/a")
    with pytest.raises(ConflictError):
        counted.put("c/a", b"678", if_none_match=True)  # failed requests are requests too
    with pytest.raises(NotFoundError):
        counted.get("c/missing")
    assert list(counted.list("c/")) == ["c/a"]
    counted.put("c/a", b"9", if_match=etag)
    counted.delete("c/a")
    assert counted.link("c/a") == any_store.link("c/a")
    assert counted.stats == StoreStats(requests=8, bytes_read=5, bytes_written=9)
    assert counted.reset() == StoreStats(requests=8, bytes_read=5, bytes_written=9)
    assert counted.stats == StoreStats()


def test_counting_store_counts_list_pages(local_store: LocalStore) -> None:
    for i in range(2001):
        local_store.put(f"k/{i:05d}", b"")
    counted = CountingStore(local_store)
    assert len(list(counted.list("k/"))) == 2001
    assert counted.stats.requests == 3  # 1000 + 1000 + 1 keys: three ListObjectsV2 pages


def test_counting_store_is_thread_safe(local_store: LocalStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    counted = CountingStore(local_store)
    local_store.put("k", b"abc")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: counted.get("k"), range(400)))
    assert counted.stats == StoreStats(requests=400, bytes_read=1200, bytes_written=0)


# -- S3 prefixes ----------------------------------------------------------------------------------------


def _raw_keys(client: S3Client) -> list[str]:
    return [obj["Key"] for obj in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_s3_prefix_isolation(s3_client: S3Client) -> None:
    for outside in ["tenant/ab", "tenant/a", "tenant/x", "other/tenant/a/k", "tenant/a-b/k"]:
        s3_client.put_object(Bucket=BUCKET, Key=outside, Body=b"outside")
    store = S3Store(s3_client, BUCKET, "tenant/a")
    assert store.prefix == "tenant/a/"
    assert store.uri == f"s3://{BUCKET}/tenant/a"
    assert list(store.list("")) == []
    store.put("k", b"in")
    store.put("sub/k", b"in", if_none_match=True)
    assert list(store.list("")) == ["k", "sub/k"]
    assert store.link("sub/k") == f"s3://{BUCKET}/tenant/a/sub/k"
    for escape in ["../ab", "../x", "/tenant/ab", "../../other/tenant/a/k"]:
        with pytest.raises(ValidationError):
            store.get(escape)
        with pytest.raises(ValidationError):
            store.delete(escape)
    with pytest.raises(NotFoundError):
        store.get("b")  # "tenant/ab" exists but is outside "tenant/a/"
    store.delete("k")
    store.delete("sub/k")
    assert sorted(_raw_keys(s3_client)) == sorted(
        ["tenant/ab", "tenant/a", "tenant/x", "other/tenant/a/k", "tenant/a-b/k"]
    )


def test_s3_prefix_normalisation(s3_client: S3Client) -> None:
    assert S3Store(s3_client, BUCKET, "p/").prefix == "p/"
    assert S3Store(s3_client, BUCKET, "").prefix == ""
    for bad in ["/p", "p//q", "../p", "p/../q"]:
        with pytest.raises(ValidationError):
            S3Store(s3_client, BUCKET, bad)
    for bad_bucket in ["", "a", "has/slash", "has space", "-lead"]:
        with pytest.raises(ValidationError):
            S3Store(s3_client, bad_bucket)


def test_s3_missing_bucket_is_terminal_not_not_found(s3_client: S3Client) -> None:
    store = S3Store(s3_client, "no-such-bucket-here")
    with pytest.raises(TerminalError) as info:
        store.get("k")
    assert not isinstance(info.value, NotFoundError)  # a missing bucket is a configuration error
    assert "no-such-bucket-here" in str(info.value)


def test_s3_content_type_is_sent(s3_client: S3Client) -> None:
    put_json(S3Store(s3_client, BUCKET), "t.json", {"a": 1})
    assert s3_client.head_object(Bucket=BUCKET, Key="t.json")["ContentType"] == "application/json"


# -- open_store -----------------------------------------------------------------------------------------


def test_open_store_local_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = open_store(str(tmp_path / "abs"))
    relative = open_store("rel/dir")
    file_uri = open_store((tmp_path / "a b").as_uri())
    dotted = open_store("./odd:name")
    assert isinstance(absolute, LocalStore) and absolute.uri == str(tmp_path / "abs")
    assert isinstance(relative, LocalStore) and relative.uri == str(tmp_path / "rel" / "dir")
    assert isinstance(file_uri, LocalStore) and file_uri.uri == str(tmp_path / "a b")
    assert isinstance(dotted, LocalStore) and dotted.uri == str(tmp_path / "odd:name")
    assert open_store("file://localhost" + str(tmp_path / "x")).uri == str(tmp_path / "x")


def test_open_store_s3_forms() -> None:
    bare = open_store("s3://my-bucket")
    slash = open_store("s3://my-bucket/")
    prefixed = open_store("s3://my-bucket/some/prefix/")
    assert isinstance(bare, S3Store) and (bare.bucket, bare.prefix) == ("my-bucket", "")
    assert isinstance(slash, S3Store) and slash.prefix == "" and slash.uri == "s3://my-bucket"
    assert isinstance(prefixed, S3Store) and prefixed.prefix == "some/prefix/"
    assert prefixed.uri == "s3://my-bucket/some/prefix"
    assert prefixed.link("k.json") == "s3://my-bucket/some/prefix/k.json"


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "   ",
        " /tmp/x",
        "gs://bucket/x",
        "http://example.com/x",
        "S3:bucket",
        "s3:/bucket",
        "s3://",
        "s3:///prefix",
        "s3://bucket/../x",
        "s3://bucket/a//b",
        "s3://bucket/x?versionId=1",
        "s3://bucket/x#frag",
        "s3://bu cket",
        "file://host/tmp/x",
        "file:relative",
        "/tmp/x\x00y",
    ],
)
def test_open_store_rejects(uri: str) -> None:
    with pytest.raises(ValidationError) as info:
        open_store(uri)
    message = str(info.value)
    assert repr(uri) in message
    assert "\n" not in message


def test_open_store_never_creates_a_client_early() -> None:
    store = open_store("s3://lazy-bucket/p")
    assert isinstance(store, S3Store)
    assert store._client is None  # created on first use only


def test_importing_the_store_does_not_import_boto3() -> None:
    code = "import sys, fave_shared.store; print(sorted({'boto3', 'botocore'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_lazy_client_honours_endpoint_env(
    moto_server: str, server_s3_client: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    store = open_store(f"s3://{BUCKET}/env")
    store.put("k", b"via env")
    assert server_s3_client.get_object(Bucket=BUCKET, Key="env/k")["Body"].read() == b"via env"


def test_lazy_client_inside_mock_aws(moto_s3_client: S3Client) -> None:
    store = open_store(f"s3://{BUCKET}/lazy")
    store.put("k", b"v")
    assert _raw_keys(moto_s3_client) == ["lazy/k"]


# -- error mapping --------------------------------------------------------------------------------------


def test_409_conditional_request_conflict_is_a_conflict(moto_s3_client: S3Client) -> None:
    # Emulators never answer 409 ConditionalRequestConflict (real S3 does when conditional writes race),
    # so this single case uses botocore's Stubber.
    from botocore.exceptions import ClientError
    from botocore.stub import Stubber

    store = S3Store(moto_s3_client, BUCKET, "p")
    with Stubber(moto_s3_client) as stubber:
        stubber.add_client_error(
            "put_object",
            service_error_code="ConditionalRequestConflict",
            service_message="A conflicting operation occurred. Please retry.",
            http_status_code=409,
        )
        with pytest.raises(ConflictError) as info:
            store.put("state.json", b"{}", if_match='"abc"')
        stubber.assert_no_pending_responses()
    assert isinstance(info.value.__cause__, ClientError)
    assert f"s3://{BUCKET}/p/state.json" in str(info.value)
    assert info.value.retryable


def _client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    response: Any = {
        "Error": {"Code": code, "Message": "msg"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("PreconditionFailed", 412, ConflictError),
        ("ConditionalRequestConflict", 409, ConflictError),
        ("NoSuchKey", 404, NotFoundError),
        ("404", 404, NotFoundError),
        ("NoSuchBucket", 404, TerminalError),
        ("SlowDown", 503, RetryableError),
        ("Throttling", 400, RetryableError),
        ("RequestLimitExceeded", 400, RetryableError),
        ("InternalError", 500, RetryableError),
        ("ServiceUnavailable", 503, RetryableError),
        ("Whatever", 502, RetryableError),
        ("AccessDenied", 403, TerminalError),
        ("InvalidArgument", 400, TerminalError),
        ("BucketAlreadyOwnedByYou", 409, TerminalError),
    ],
)
def test_translate_client_errors(code: str, status: int, expected: type[FaveError]) -> None:
    error = translate_error(_client_error(code, status), "put", "bkt", "p/k")
    assert type(error) is expected
    assert "s3://bkt/p/k" in str(error)
    assert code in str(error)


def test_translate_connection_errors() -> None:
    from botocore.exceptions import (
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    for error in [
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectionClosedError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
    ]:
        translated = translate_error(error, "get", "b", "k")
        assert isinstance(translated, RetryableError), error
        assert type(error).__name__ in str(translated)
    assert type(translate_error(NoCredentialsError(), "get", "b", "k")) is TerminalError


def test_unreachable_endpoint_is_retryable(aws_env: None) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_s3_client(f"http://127.0.0.1:{port}", retries={"max_attempts": 1}, connect_timeout=2)
    store = S3Store(client, BUCKET)
    with pytest.raises(RetryableError, match=f"s3://{BUCKET}/k") as info:
        store.get("k")
    from botocore.exceptions import EndpointConnectionError

    assert isinstance(info.value.__cause__, EndpointConnectionError)


# -- LocalStore specifics -------------------------------------------------------------------------------


def test_local_etag_is_quoted_md5(local_store: LocalStore) -> None:
    data = b"hello"
    assert local_store.put("k", data) == '"' + hashlib.md5(data).hexdigest() + '"'
    assert local_store.put("e", b"") == '"d41d8cd98f00b204e9800998ecf8427e"'
    # An unquoted etag is accepted, as S3 accepts it.
    local_store.put("k", b"next", if_match=hashlib.md5(data).hexdigest())


def test_local_layout_and_bookkeeping_are_hidden(local_store: LocalStore) -> None:
    local_store.put("a/b.json", b"{}")
    local_store.put("a/c.json", b"{}", if_none_match=True)
    assert (local_store.root / "a" / "b.json").read_bytes() == b"{}"
    assert (local_store.root / ".fave" / "locks").is_dir()
    assert list((local_store.root / ".fave" / "tmp").iterdir()) == []  # no temp file left behind
    assert list(local_store.list("")) == ["a/b.json", "a/c.json"]
    assert list(local_store.list(".")) == []
    assert list(local_store.list(".fave/")) == []
    for reserved in [".fave", ".fave/locks/000.lock", ".fave/tmp/x"]:
        with pytest.raises(ValidationError, match="reserved"):
            local_store.get(reserved)
    local_store.put(".faves/ok", b"")  # only the exact segment is reserved
    assert local_store.get(".faves/ok").data == b""


def test_local_failed_conditional_put_leaves_no_temp_file(local_store: LocalStore) -> None:
    local_store.put("k", b"v", if_none_match=True)
    with pytest.raises(ConflictError):
        local_store.put("k", b"w", if_none_match=True)
    assert list((local_store.root / ".fave" / "tmp").iterdir()) == []


def test_local_object_and_directory_collision(local_store: LocalStore) -> None:
    local_store.put("a", b"file")
    with pytest.raises(TerminalError, match="both"):
        local_store.put("a/b", b"below")
    local_store.put("d/x", b"below")
    with pytest.raises(TerminalError, match="both"):
        local_store.put("d", b"above")
    assert local_store.head("d") is None
    with pytest.raises(NotFoundError):
        local_store.get("d")
    with pytest.raises(NotFoundError):
        local_store.get("a/b")
    local_store.delete("d")  # not an object: nothing to do
    assert local_store.get("d/x").data == b"below"


def test_local_delete_prunes_empty_directories(local_store: LocalStore) -> None:
    local_store.put("d/e/f/k", b"v")
    local_store.put("d/keep", b"v")
    local_store.delete("d/e/f/k")
    assert not (local_store.root / "d" / "e").exists()
    assert (local_store.root / "d").is_dir()
    local_store.put("d/e", b"now an object")  # the name is free again
    assert list(local_store.list("d/")) == ["d/e", "d/keep"]


def test_local_store_root_created_lazily(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "later")
    assert store.head("k") is None
    assert list(store.list("")) == []
    assert not (tmp_path / "later").exists()
    store.put("k", b"v")
    assert (tmp_path / "later" / "k").read_bytes() == b"v"


def test_local_durable_mode(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, durable=True)
    etag = store.put("d/k", b"synced")
    assert store.get("d/k").etag == etag


# -- property test: every backend behaves like a dict ---------------------------------------------------

_KEYS = ["a", "b", "d/x", "d/y"]
_DATA = st.binary(max_size=2)  # tiny alphabet: identical re-puts (same etag) happen often
_OPS = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(_KEYS), _DATA),
    st.tuples(st.just("create"), st.sampled_from(_KEYS), _DATA),
    st.tuples(st.just("swap"), st.sampled_from(_KEYS), _DATA, st.sampled_from(["current", "stale", "bogus"])),
    st.tuples(st.just("delete"), st.sampled_from(_KEYS)),
    st.tuples(st.just("get"), st.sampled_from(_KEYS)),
    st.tuples(st.just("list"), st.sampled_from(["", "d", "d/", "a", "x"])),
)
_EXAMPLES = {"local": 150, "moto": 40, "server": 20, "localstack": 20}  # server is ~100 requests/s


def _run_against_model(store: ObjectStore, ns: str, ops: list[tuple[Any, ...]]) -> None:
    """Apply ``ops`` under key namespace ``ns`` to the store and to a dict; they must agree at each step."""
    model: dict[str, tuple[bytes, str]] = {}  # key -> (data, etag)
    seen: dict[str, list[str]] = {}  # key -> every etag the backend ever returned for it
    for op in ops:
        kind, key = op[0], ns + op[1]
        if kind == "put":
            etag = store.put(key, op[2])
            model[key] = (op[2], etag)
            seen.setdefault(key, []).append(etag)
        elif kind == "create":
            if key in model:
                with pytest.raises(ConflictError):
                    store.put(key, op[2], if_none_match=True)
            else:
                model[key] = (op[2], store.put(key, op[2], if_none_match=True))
                seen.setdefault(key, []).append(model[key][1])
        elif kind == "swap":
            current = model[key][1] if key in model else None
            stale = [e for e in seen.get(key, []) if e != current]
            etag_in = {"current": current, "stale": stale[-1] if stale else None}.get(op[3])
            etag_in = etag_in or '"00000000000000000000000000000000"'
            if key not in model:
                with pytest.raises(NotFoundError):
                    store.put(key, op[2], if_match=etag_in)
            elif etag_in != current:
                with pytest.raises(ConflictError):
                    store.put(key, op[2], if_match=etag_in)
            else:
                model[key] = (op[2], store.put(key, op[2], if_match=etag_in))
                seen[key].append(model[key][1])
        elif kind == "delete":
            store.delete(key)
            model.pop(key, None)
        elif kind == "get":
            if key in model:
                blob = store.get(key)
                assert (blob.data, blob.etag) == model[key]
                assert store.head(key) == model[key][1]
            else:
                with pytest.raises(NotFoundError):
                    store.get(key)
                assert store.head(key) is None
        else:  # list: op[1] is a prefix within the namespace
            assert list(store.list(key)) == sorted(k for k in model if k.startswith(key))
    assert list(store.list(ns)) == sorted(model)


def test_behaves_like_a_dict(any_store: ObjectStore, request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.params["any_store"]
    namespaces = itertools.count()

    # The store fixture is shared by all examples; each example works in a fresh key namespace instead.
    @settings(
        max_examples=_EXAMPLES[backend],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(ops=st.lists(_OPS, max_size=20))
    def check(ops: list[tuple[Any, ...]]) -> None:
        _run_against_model(any_store, f"ns{next(namespaces)}/", ops)

    check()
