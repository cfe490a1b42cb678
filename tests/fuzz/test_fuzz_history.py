"""Fuzzing the query strings of GET /history and GET /stats (and its alias /usage), and the
ids of /history/{id}: arbitrary text, dates at the ends of the calendar, numbers beyond
64 bits, cursors that are base64 of arbitrary JSON."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import strategies as fz
from tests.fuzz.support import Bystander, Fuzzer, area_settings, fuzz_settings

HISTORY_PARAMS: dict[str, st.SearchStrategy[str]] = {
    "limit": fz.int_strings, "cursor": fz.cursors, "from": fz.dates, "to": fz.dates,
    "status": fz.texts | st.sampled_from(("completed", "completed,failed", ",", "pending,x")),
    "source": fz.texts | st.sampled_from(("v1", "legacy")), "model": fz.texts, "q": fz.texts
    | st.sampled_from(("%", "_", "\\", "\x00", "a" * 500, "a" * 501)),
}
STATS_PARAMS: dict[str, st.SearchStrategy[str]] = {
    "from": fz.dates, "to": fz.dates, "days": fz.int_strings,
}


def query(params: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[dict[str, str]]:
    """Any subset of ``params``, each with a fuzzed value."""
    return st.fixed_dictionaries({}, optional=params)


@pytest.fixture(scope="module", autouse=True)
def some_history(gateway: Any, fuzzer: Fuzzer) -> None:
    """A few rows of the fuzzing user's own, so filters and cursors have pages to walk."""
    for i in range(5):
        r = httpx.post(gateway.url + "/v1/chat/completions",
                       headers={"authorization": f"Bearer {fuzzer.api_key}"},
                       json={"model": "gateway-demo",
                             "messages": [{"role": "user", "content": f"history row {i}"}]})
        assert r.status_code == 200, r.text
    # The writer stores rows (and their usage counters) in batches, after the answers.
    gateway.run(gateway.state.writer.flush())


def test_the_queries_start_out_valid(fuzzer: Fuzzer) -> None:
    r = fuzzer.send("GET", "/history", params={"limit": "2"}, content_type=None)
    cursor = r.json()["next_cursor"]
    assert r.status_code == 200 and cursor
    r = fuzzer.send("GET", "/history", content_type=None, params={
        "limit": "2", "cursor": cursor, "from": "2020-01-01", "to": "2999-01-01",
        "status": "completed", "source": "v1", "model": "gateway-demo", "q": "row"})
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    r = fuzzer.send("GET", "/stats", params={"days": "7"}, content_type=None)
    assert r.status_code == 200 and r.json()["totals"]["requests"] >= 5


# The reports, always tried first (few examples rarely land exactly on them).
@example(params={"to": "9999-12-31"})
@example(params={"from": "0001-01-01T00:00:00+14:00"})
@example(params={"cursor": fz.b64(["2026-01-01T00:00:00", 0])})
@example(params={"cursor": fz.b64([0, "0" * 32])})
@fuzz_settings
@given(params=query(HISTORY_PARAMS))
def test_history_query(fuzzer: Fuzzer, params: dict[str, str]) -> None:
    fuzzer.send("GET", "/history", params=params, content_type=None)


@pytest.mark.parametrize("name", HISTORY_PARAMS)
@area_settings
@given(data=st.data())
def test_one_history_parameter(fuzzer: Fuzzer, name: str, data: st.DataObject) -> None:
    value = data.draw(HISTORY_PARAMS[name], label=name)
    fuzzer.send("GET", "/history", params={name: value}, content_type=None)


@area_settings
@given(payload=fz.cursor_payloads)
def test_history_cursor_of_arbitrary_json(fuzzer: Fuzzer, payload: Any) -> None:
    fuzzer.send("GET", "/history", params={"cursor": fz.b64(payload)}, content_type=None)


@pytest.mark.parametrize("name", STATS_PARAMS)
@area_settings
@given(data=st.data())
def test_one_stats_parameter(fuzzer: Fuzzer, name: str, data: st.DataObject) -> None:
    value = data.draw(STATS_PARAMS[name], label=name)
    fuzzer.send("GET", "/stats", params={name: value}, content_type=None)


@example(params={"to": "0001-01-01"}, route="/stats")
@fuzz_settings
@given(params=query(STATS_PARAMS), route=st.sampled_from(("/stats", "/usage")))
def test_stats_query(fuzzer: Fuzzer, params: dict[str, str], route: str) -> None:
    fuzzer.send("GET", route, params=params, content_type=None)


@fuzz_settings
@given(item=fz.texts, method=st.sampled_from(("GET", "DELETE")))
def test_arbitrary_item_ids(fuzzer: Fuzzer, item: str, method: str) -> None:
    fuzzer.send(method, "/history/" + quote(item, safe=""), content_type=None)


def test_bystander_calls_are_all_stored(bystander: Bystander) -> None:
    bystander.assert_all_stored()
