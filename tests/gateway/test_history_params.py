"""Every query parameter of /history and /stats: a bad value is a 400 naming it, never a
500, on SQLite and on PostgreSQL (which refuses NUL in text)."""

from __future__ import annotations

import base64
import uuid

import httpx
import orjson
import pytest

from tests.conftest import Account, register
from tests.servers import GatewayServer

ID = uuid.uuid4().hex


def cursor(value: object) -> str:
    """A cursor as the gateway writes them (urlsafe base64 of JSON), holding ``value``."""
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


BAD_HISTORY = [
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"limit": "1e3"}, "limit"), ({"limit": "1_0"}, "limit"), ({"limit": "9" * 5000}, "limit"),
    ({"limit": "\x00"}, "limit"),
    ({"from": "yesterday"}, "from"), ({"from": "2026-13-01"}, "from"),
    ({"from": "0001-01-01T00:00:00+14:00"}, "from"), ({"from": "2026-01-01\x00"}, "from"),
    ({"to": "9999-12-31"}, "to"), ({"to": "9999-12-31T23:59:59.999999+00:00"}, "to"),
    ({"to": "9999-12-31T23:00:00-14:00"}, "to"), ({"to": "2026-02-30"}, "to"),
    ({"from": "2026-02-01", "to": "2026-01-01"}, "from"),
    ({"status": "done"}, "status"), ({"status": "completed,\x00"}, "status"),
    ({"source": "web"}, "source"), ({"source": "v1\x00"}, "source"),
    ({"model": "gpt-4o\x00"}, "model"), ({"model": "m" * 201}, "model"),
    ({"q": "hello\x00world"}, "q"), ({"q": "\x00"}, "q"), ({"q": "x" * 501}, "q"),
    ({"cursor": "!!!"}, "cursor"), ({"cursor": "é"}, "cursor"), ({"cursor": "a" * 5000}, "cursor"),
    ({"cursor": base64.urlsafe_b64encode(b"not json").decode()}, "cursor"),
    ({"cursor": cursor([1, 2])}, "cursor"),
    ({"cursor": cursor(["2026-01-01T00:00:00+00:00", 5])}, "cursor"),
    ({"cursor": cursor([None, ID])}, "cursor"),
    ({"cursor": cursor({"created": "2026-01-01T00:00:00+00:00", "id": ID})}, "cursor"),
    ({"cursor": cursor(["2026-01-01T00:00:00+00:00"])}, "cursor"),
    ({"cursor": cursor(["2026-01-01T00:00:00+00:00", ID, 3])}, "cursor"),
    ({"cursor": cursor("ab")}, "cursor"), ({"cursor": cursor(7)}, "cursor"),
    ({"cursor": cursor(["2026-01-01T00:00:00+00:00", "zz"])}, "cursor"),
    ({"cursor": cursor(["2026-01-01T00:00:00", ID])}, "cursor"),  # naive: not ours
    ({"cursor": cursor(["0001-01-01T00:00:00+14:00", ID])}, "cursor"),
    ({"cursor": cursor(["2026-01-01\x00", ID])}, "cursor"),
]

BAD_STATS = [
    ({"days": "0"}, "days"), ({"days": "367"}, "days"), ({"days": "x"}, "days"),
    ({"days": "9" * 5000}, "days"),
    ({"to": "0001-01-01"}, "to"), ({"to": "0001-01-10", "days": "30"}, "to"),
    ({"to": "9999-12-32"}, "to"), ({"to": "2026-01-01T00:00"}, "to"), ({"to": "\x00"}, "to"),
    ({"from": "0001-01-00"}, "from"), ({"from": "2026-01-01\x00"}, "from"),
    ({"from": "2026-02-01", "to": "2026-01-01"}, "from"),
    ({"from": "2024-01-01", "to": "2026-01-01"}, "from"),
    ({"from": "9999-12-31"}, "from"),  # after today, the default 'to'
]

# The extremes that are representable stay valid: the fix is not a blanket refusal.
GOOD = [
    ("/history", {"from": "0001-01-01T00:00:00Z"}), ("/history", {"to": "9999-12-30"}),
    ("/history", {"from": "0001-01-01", "to": "9999-12-31T23:59:59+00:00"}),
    ("/history", {"q": "é ü 100% _x_"}), ("/history", {"model": "m" * 200, "limit": "+5"}),
    ("/history", {"cursor": cursor(["9999-12-31T23:59:59.999999+00:00", ID])}),
    ("/history", {"cursor": cursor(["0001-01-01T00:00:00+00:00", ID])}),
    ("/stats", {"to": "0001-01-01", "days": "1"}), ("/stats", {"to": "9999-12-31"}),
    ("/stats", {"from": "0001-01-01", "to": "0001-12-31"}),
]


@pytest.fixture(scope="module")
def reader(gateway: GatewayServer) -> Account:
    """One user for the whole table: these requests only read, and registering costs."""
    return register(gateway.url)


def get(gateway: GatewayServer, account: Account, path: str, params: dict) -> httpx.Response:
    return httpx.get(gateway.url + path, params=params,
                     headers={"Authorization": f"Bearer {account.api_key}"})


@pytest.mark.parametrize(("path", "params", "param"),
                         [("/history", p, n) for p, n in BAD_HISTORY]
                         + [(path, p, n) for path in ("/stats", "/usage") for p, n in BAD_STATS])
def test_bad_values_are_400_naming_the_parameter(gateway: GatewayServer, reader: Account,
                                                 path: str, params: dict, param: str) -> None:
    r = get(gateway, reader, path, params)
    assert r.status_code == 400, (params, r.text)
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(("path", "params"), GOOD)
def test_representable_extremes_still_answer(gateway: GatewayServer, reader: Account,
                                             path: str, params: dict) -> None:
    r = get(gateway, reader, path, params)
    assert r.status_code == 200, (params, r.text)
    assert r.json()["object"] == ("list" if path == "/history" else "usage")
