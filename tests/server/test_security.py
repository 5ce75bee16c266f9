"""Keys, scopes, CORS, rate limits and body limits, on every route, against real Redis."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.server import ADMIN, settings

from arbiter.engine.store.client import connect
from arbiter.server.app import create_app
from arbiter.server.security.auth import SCOPES, key_entry

# (method, path, scope it needs, body); every /v1 route the server answers.
ROUTES: list[tuple[str, str, str, Any]] = [
    ("POST", "/v1/decide", "decide", {"customer_id": "c1", "context": {"channel": "web"}}),
    ("POST", "/v1/feedback", "feedback", {"decision_id": "d", "action": "a", "reward": 1}),
    ("POST", "/v1/events", "events", {"events": [{"customer_id": "c1", "type": "page_view"}]}),
    ("GET", "/v1/profiles/c1", "profiles:read", None),
    ("PUT", "/v1/profiles/c1", "profiles:write", {"visits": 1}),
    ("PATCH", "/v1/profiles/c1", "profiles:write", {"visits": 2}),
    ("DELETE", "/v1/profiles/c1", "profiles:write", None),
    ("GET", "/v1/rulesets", "rulesets:read", None),
    ("GET", "/v1/rulesets/shop", "rulesets:read", None),
    ("PUT", "/v1/rulesets/shop", "rulesets:write", "TEXT"),
    ("POST", "/v1/rulesets/shop/rollback", "rulesets:write", None),
    ("GET", "/v1/keys", "admin", None),
    ("POST", "/v1/keys", "admin", {"name": "made", "scopes": ["decide"]}),
    ("POST", "/v1/keys/made/rotate", "admin", None),
    ("DELETE", "/v1/keys/made", "admin", None),
]


def key_of(scope: str) -> str:
    return "key-" + scope.replace(":", "-")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def write_keys(path: Path, extra: str = "") -> None:
    entries = [key_entry(s.replace(":", "_"), key_of(s), [s]) for s in SCOPES]
    expired = key_entry("old", "key-expired", ["decide"]) + 'expires = "2020-01-01T00:00:00Z"\n'
    limited = key_entry("metered", "key-metered", ["decide"], rate_limit="3/60s")
    tied = key_entry("shop-web", "key-shop", ["decide"]) + 'origins = ["https://shop.example"]\n'
    path.write_text("\n".join([*entries, expired, limited, tied, extra]))


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    write_keys(path)
    return path


@pytest.fixture
def client(redis_url: str, tmp_path: Path, keys_file: Path) -> Iterator[TestClient]:
    app = create_app(
        settings(
            redis_url,
            tmp_path,
            keys_file=str(keys_file),
            cors_origins="https://shop.example",
            max_body_bytes=64 * 1024,
        )
    )
    with TestClient(app) as c:
        yield c


def call(client: TestClient, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if body == "TEXT":
        text = client.get("/v1/rulesets/shop", headers=ADMIN).json()["text"]
        return client.request(method, path, content=text.encode(), headers=headers)
    if body is None:
        return client.request(method, path, headers=headers)
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "needed", "body"), ROUTES)
def test_every_route_checks_its_scope(
    client: TestClient, method: str, path: str, needed: str, body: Any
) -> None:
    r = call(client, method, path, body, {})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = call(client, method, path, body, bearer("not-a-key"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = call(client, method, path, body, bearer("key-expired"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"
    for other in SCOPES:
        if other in (needed, "admin"):
            continue
        r = call(client, method, path, body, bearer(key_of(other)))
        assert r.status_code == 403, (other, r.text)
        assert r.json()["error"]["code"] == "forbidden"
        assert needed in r.json()["error"]["message"]
    for allowed in (bearer(key_of(needed)), ADMIN):
        r = call(client, method, path, body, allowed)
        assert r.status_code not in (401, 403), r.text


def test_expired_key_is_named(client: TestClient) -> None:
    r = client.post("/v1/decide", json={"customer_id": "a"}, headers=bearer("key-expired"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_expired"


def test_rules_text_and_profiles_need_a_read_scope(client: TestClient) -> None:
    client.put("/v1/profiles/vip", json={"visits": 40}, headers=ADMIN)
    for path in ("/v1/rulesets/shop", "/v1/rulesets", "/v1/profiles/vip"):
        for headers in ({}, bearer(key_of("decide")), bearer(key_of("profiles:write"))):
            r = client.get(path, headers=headers)
            assert r.status_code in (401, 403)
            assert "Welcome!" not in r.text and "visits" not in r.text
    assert "Welcome!" in client.get("/v1/rulesets/shop", headers=bearer("key-rulesets-read")).text
    r = client.get("/v1/profiles/vip", headers=bearer("key-profiles-read"))
    assert r.json()["attributes"] == {"visits": 40}


def test_a_rotated_key_works_at_once_and_the_old_one_stops(
    client: TestClient, keys_file: Path
) -> None:
    ring = client.app.state.arbiter.keys  # type: ignore[attr-defined]
    ring.reload_check_s = 0.0  # look at the file on every request (the default is once a second)
    assert (
        client.post("/v1/decide", json={"customer_id": "a"}, headers=bearer("new")).status_code
        == 401
    )
    keys_file.write_text(keys_file.read_text().replace(
        key_entry("decide", key_of("decide"), ["decide"]), key_entry("decide", "new", ["decide"])
    ))  # fmt: skip
    ok = client.post("/v1/decide", json={"customer_id": "a"}, headers=bearer("new"))
    assert ok.status_code == 200
    old = client.post("/v1/decide", json={"customer_id": "a"}, headers=bearer(key_of("decide")))
    assert old.status_code == 401
    # A broken file keeps the keys last read: a typo must not lock everyone out.
    keys_file.write_text("[[key]]\nname = 1\n")
    again = client.post("/v1/decide", json={"customer_id": "a"}, headers=bearer("new"))
    assert again.status_code == 200


def test_access_log_names_the_key_never_the_key(client: TestClient) -> None:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("arbiter.access")
    logger.addHandler(handler)
    try:
        r = client.post(
            "/v1/decide", json={"customer_id": "cust-zq"}, headers=bearer(key_of("decide"))
        )
        client.get("/v1/profiles/cust-zq", headers=ADMIN)
    finally:
        logger.removeHandler(handler)
    entries = [json.loads(line) for line in lines]
    decide = next(e for e in entries if e["route"] == "/v1/decide")
    assert decide["key"] == "decide" and decide["status"] == 200
    assert decide["decision_id"] == r.json()["decision_id"]
    assert decide["duration_ms"] > 0
    profile = next(e for e in entries if e["route"] == "/v1/profiles/{customer_id}")
    assert profile["key"] == "admin"
    text = "\n".join(lines)
    assert "key-decide" not in text and "admin-key" not in text and "cust-zq" not in text


def test_rate_limit_headers_then_429(client: TestClient) -> None:
    headers = bearer("key-metered")
    for remaining in (2, 1, 0):
        r = client.post("/v1/decide", json={"customer_id": "a"}, headers=headers)
        assert r.status_code == 200
        assert r.headers["ratelimit-policy"] == '"quota";q=3;w=60'
        assert r.headers["ratelimit"].startswith(f'"quota";r={remaining};t=')
    r = client.post("/v1/decide", json={"customer_id": "a"}, headers=headers)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.headers["ratelimit"].startswith('"quota";r=0;')
    # Other keys have their own quota.
    ok = client.post("/v1/decide", json={"customer_id": "a"}, headers=bearer(key_of("decide")))
    assert ok.status_code == 200


def test_limiter_without_redis_keeps_decide_and_refuses_admin_reads(
    client: TestClient, unused_port: int
) -> None:
    state = client.app.state.arbiter  # type: ignore[attr-defined]
    state.keys.default_rate_limit = None
    dead = connect(f"redis://127.0.0.1:{unused_port}/0", socket_timeout=0.2)
    state.limiter.redis = dead
    for entry in state.keys.keys:
        object.__setattr__(entry, "rate_limit", entry.rate_limit or _limit())
    r = client.post("/v1/decide", json={"customer_id": "a"}, headers=bearer(key_of("decide")))
    assert r.status_code == 200 and "ratelimit" not in r.headers
    r = client.get("/v1/profiles/a", headers=bearer(key_of("profiles:read")))
    assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
    assert state.limiter.unavailable == 2


def _limit() -> Any:
    from arbiter.server.security.auth import RateLimit

    return RateLimit(100, 60)


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_key_tied_to_origins(client: TestClient) -> None:
    body = {"customer_id": "a"}
    ok = client.post(
        "/v1/decide", json=body, headers={**bearer("key-shop"), "Origin": "https://shop.example"}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    r = client.post(
        "/v1/decide", json=body, headers={**bearer("key-shop"), "Origin": "https://evil.example"}
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_refused"
    assert "access-control-allow-origin" not in r.headers


@pytest.fixture
def public_client(redis_url: str, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(
        settings(
            redis_url,
            tmp_path,
            decide_key="dk",
            public_scopes="decide,feedback",
            cors_origins="https://shop.example, https://m.shop.example",
        )
    )
    with TestClient(app) as c:
        yield c


def test_cors_preflight_allowed_and_refused(public_client: TestClient) -> None:
    asks = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    r = public_client.options("/v1/decide", headers={"Origin": "https://shop.example", **asks})
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"]
    assert r.headers["vary"] == "Origin"
    r = public_client.options("/v1/decide", headers={"Origin": "https://evil.example", **asks})
    assert r.status_code == 403 and r.json()["error"]["code"] == "cors_refused"
    assert "access-control-allow-origin" not in r.headers
    wrong_method = {**asks, "Access-Control-Request-Method": "DELETE"}
    r = public_client.options(
        "/v1/decide", headers={"Origin": "https://shop.example", **wrong_method}
    )
    assert r.status_code == 403


def test_public_decide_from_an_allowed_origin_only(public_client: TestClient) -> None:
    body = {"customer_id": "a", "context": {"channel": "web"}}
    r = public_client.post("/v1/decide", json=body, headers={"Origin": "https://m.shop.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://m.shop.example"
    assert "ratelimit" in r.headers["access-control-expose-headers"]
    r = public_client.post("/v1/decide", json=body, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_refused"
    # A page this server served itself (same origin) needs no listing.
    r = public_client.post("/v1/decide", json=body, headers={"Origin": "http://testserver"})
    assert r.status_code == 200
    # Servers (no Origin) use the public scope too; a bad key is still refused.
    assert public_client.post("/v1/decide", json=body).status_code == 200
    assert public_client.post("/v1/decide", json=body, headers=bearer("nope")).status_code == 401
    # Never public: reading the rules.
    assert public_client.get("/v1/rulesets/shop").status_code == 401


def test_oversized_body_refused_before_reading(client: TestClient) -> None:
    big = b'{"customer_id": "a", "context": {"x": "' + b"y" * 70_000 + b'"}}'
    for path in ("/v1/decide", "/v1/events"):
        r = client.post(path, content=big, headers={**ADMIN, "content-type": "application/json"})
        assert r.status_code == 413, path
        assert r.json()["error"] == {
            "code": "too_large",
            "message": "request body over 65536 bytes",
            "field": "body",
        }


def test_chunked_body_cut_off_at_the_limit(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"events": ['
        for _ in range(2000):
            yield b'{"customer_id": "a", "type": "page_view"},'
        yield b"]}"

    r = client.post(
        "/v1/events", content=chunks(), headers={**ADMIN, "content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"


@pytest.mark.parametrize("path", ["/v1/decide", "/v1/events", "/v1/profiles/c1"])
def test_deeply_nested_json_refused_before_parsing(client: TestClient, path: str) -> None:
    nested = b"[" * 5000 + b"]" * 5000
    body = b'{"customer_id": "a", "context": {"x": ' + nested + b"}}"
    method = "PUT" if "profiles" in path else "POST"
    r = client.request(
        method, path, content=body, headers={**ADMIN, "content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_deep"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": "a" * 257}, "customer_id"),
        ({"customer_id": "a", "context": {f"k{i}": 1 for i in range(65)}}, "context"),
        ({"customer_id": "a", "context": {"page": "p" * 1025}}, "context.page"),
        ({"customer_id": "a", "context": {"k" * 65: 1}}, "context." + "k" * 64),
        ({"customer_id": "a", "limit": 51}, "limit"),
    ],
)
def test_decide_size_limits_name_the_field(client: TestClient, body: Any, field: str) -> None:
    r = client.post("/v1/decide", json=body, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["field"] == field


def test_too_many_events_names_the_field(client: TestClient) -> None:
    events = [{"customer_id": "a", "type": "page_view"}] * 1_001
    r = client.post("/v1/events", json={"events": events}, headers=ADMIN)
    assert r.status_code in (413, 422)
    assert r.json()["error"]["field"] in ("events", "body")


def test_keys_new_prints_an_entry_that_the_server_accepts(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from arbiter.server.cli.main import main

    assert main(["keys", "new", "web", "--scopes", "decide,feedback", "--rate-limit", "5/1s"]) == 0
    out, err = capsys.readouterr()
    key = next(line[2:] for line in err.splitlines() if line.startswith("# ak_"))
    assert key not in out  # the file holds the digest only
    (tmp_path / "keys.toml").write_text(out)
    app = create_app(settings(redis_url, tmp_path, keys_file=str(tmp_path / "keys.toml")))
    with TestClient(app) as c:
        r = c.post("/v1/decide", json={"customer_id": "a"}, headers=bearer(key))
        assert r.status_code == 200 and r.headers["ratelimit-policy"] == '"quota";q=5;w=1'
    assert main(["keys", "new", "x", "--scopes", "root"]) == 2
