"""Fuzzing the legacy job API, POST /inference: arbitrary JSON, near-valid job bodies
(prompt or messages, demo model or an upstream model), very deep nesting, raw bytes."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import strategies as fz
from tests.fuzz.conftest import UPSTREAM_MODEL
from tests.fuzz.support import Bystander, Fuzzer, fuzz_settings

PATH = "/inference"
models = st.sampled_from(("gateway-demo", UPSTREAM_MODEL))


@pytest.mark.parametrize("with_messages", [False, True])
@pytest.mark.parametrize("model", ["gateway-demo", UPSTREAM_MODEL])
def test_the_near_valid_bodies_start_out_valid(fuzzer: Fuzzer, model: str,
                                              with_messages: bool) -> None:
    r = fuzzer.send("POST", PATH, content=fz.encode(fz.valid_legacy(model, with_messages)))
    assert r.status_code == 202


@fuzz_settings
@given(body=fz.json_values, ascii_only=st.booleans())
def test_arbitrary_json(fuzzer: Fuzzer, body: Any, ascii_only: bool) -> None:
    fuzzer.send("POST", PATH, content=fz.encode(body, ascii_only))


@fuzz_settings
@given(path=st.sampled_from(fz.LEGACY_PATHS), value=fz.json_values, model=models,
       with_messages=st.booleans())
def test_one_field_replaced_by_arbitrary_json(fuzzer: Fuzzer, path: fz.Path, value: Any,
                                              model: str, with_messages: bool) -> None:
    body = fz.replace_at(fz.valid_legacy(model, with_messages), path, value)
    fuzzer.send("POST", PATH, content=fz.encode(body))


# The report: a content part nested ~300 deep is a 500. (The depth, not the value,
# is the argument: a failing example is printed, and 300 levels of repr upset pytest.)
@example(path=("messages", 0, "content", 0, "z"), depth=300, shape="array",
         model="gateway-demo", with_messages=True)
@fuzz_settings
@given(path=st.sampled_from(fz.LEGACY_PATHS), depth=fz.depths, shape=fz.shapes,
       model=models, with_messages=st.booleans())
def test_one_field_nested_deeply(fuzzer: Fuzzer, path: fz.Path, depth: int, shape: str,
                                 model: str, with_messages: bool) -> None:
    value = fz.nest(depth, None, shape)
    body = fz.replace_at(fz.valid_legacy(model, with_messages), path, value)
    fuzzer.send("POST", PATH, content=fz.encode(body))


@fuzz_settings
@given(raw=fz.raw_bodies, content_type=fz.content_types)
def test_raw_bytes_and_content_types(fuzzer: Fuzzer, raw: bytes, content_type: str | None
                                     ) -> None:
    fuzzer.send("POST", PATH, content=raw, content_type=content_type)


@fuzz_settings
@given(job_id=fz.texts, suffix=st.sampled_from(("", "/result", "/cancel")),
       method=st.sampled_from(("GET", "POST", "DELETE")))
def test_arbitrary_job_ids(fuzzer: Fuzzer, job_id: str, suffix: str, method: str) -> None:
    fuzzer.send(method, f"{PATH}/{quote(job_id, safe='')}{suffix}", content_type=None)


def test_bystander_calls_are_all_stored(bystander: Bystander) -> None:
    bystander.assert_all_stored()
