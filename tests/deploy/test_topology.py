"""What docker-compose.yml describes, run on loopback without Docker: three real ``gateway
serve`` replicas on one PostgreSQL database and a shared Redis, behind a real nginx running
the shipped deploy/nginx.conf, with the fake upstream replaying recorded OpenAI answers.

Every call goes through nginx, as a client's would; the access log (tests/nginx.py) says
which replica took it. The tests share one topology and run in file order: the last one
kills a replica.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from storage.migrate import upgrade
from storage.models import InferenceRequest, SubscriptionPlan
from tests.conftest import ONE_TRY, REDIS_URL, postgres_database, run_sync, skip_or_fail
from tests.legacy.support import query, set_tier, wait_final
from tests.nginx import NginxProcess
from tests.processes import GatewayProcess, free_port, gateway_env
from tests.servers import FakeUpstream, Reply, recorded_openai, recording_events

REPLICAS = 3
CHAT = "/v1/chat/completions"
# The replica the last test kills. Its writer waits an hour between two flushes, so at the
# kill every row it answered is still only queued (and in its crash spool): the rows can
# reach PostgreSQL only through the spool's replay when it starts again.
VICTIM = 2


@dataclass
class Topology:
    database: str
    upstream: FakeUpstream
    nginx: NginxProcess
    replicas: list[GatewayProcess]
    envs: list[dict[str, str]]
    dirs: list[Path]

    def address(self, replica: int) -> str:
        return f"127.0.0.1:{self.replicas[replica].port}"

    def served_by(self, prefix: str) -> dict[str, int]:
        """Which replica answered each logged call of ``prefix`` (the last one nginx tried)."""
        where = {self.address(i): i for i in range(REPLICAS)}
        return {call: where[f.upstreams[-1]] for call, f in self.nginx.forwarded(prefix).items()}

    def user(self, plan: str = "enterprise") -> tuple[str, str]:
        """A user registered through nginx on ``plan``: (user id, API key)."""
        r = httpx.post(self.nginx.url + "/auth/register", timeout=30,
                       json={"email": f"topo-{uuid.uuid4().hex[:10]}@example.com",
                             "password": "correct horse 42"})
        assert r.status_code == 201, r.text
        set_tier(self.database, r.json()["user"]["id"], plan)
        return r.json()["user"]["id"], r.json()["apiKey"]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    if not REDIS_URL:
        skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
    database = postgres_database("topo")
    run_sync(upgrade, database)  # compose's `migrate` service: once, before any replica
    upstream = FakeUpstream()
    root = tmp_path_factory.mktemp("topology")
    providers = orjson.dumps({"fake-openai": {
        "kind": "openai", "base_url": upstream.url + "/v1", "api_key": "sk-up",
        "models": {"gpt-4o-mini": "gpt-4o-mini"}, **ONE_TRY}}).decode()
    ports = [free_port() for _ in range(REPLICAS)]
    dirs = [root / f"gateway{i + 1}" for i in range(REPLICAS)]
    # As compose's x-gateway block says, except what Docker would give (ports, volumes).
    envs = [gateway_env(dirs[i], DATABASE_URL=database, REDIS_URL=REDIS_URL,
                        GATEWAY_RATE_LIMIT_BACKEND="redis", GATEWAY_MIGRATE_ON_START="false",
                        GATEWAY_TRUST_FORWARDED="true", FORWARDED_ALLOW_IPS="127.0.0.1",
                        GATEWAY_PROVIDERS=providers,
                        **({"GATEWAY_WRITER_FLUSH_SECONDS": "3600"} if i == VICTIM else {}))
            for i in range(REPLICAS)]
    replicas: list[GatewayProcess] = []
    nginx: NginxProcess | None = None
    try:
        # One process each (compose runs two workers a container): --workers is
        # tests/gateway/test_workers.py's and test_metrics.py's subject, not this one's.
        for i in range(REPLICAS):  # all three start at once, then are waited for
            replicas.append(GatewayProcess(envs[i], root / f"gateway{i + 1}.log",
                                           port=ports[i]))
        for replica in replicas:
            replica.wait_ready()
        nginx = NginxProcess(root / "nginx", ports)
        yield Topology(database, upstream, nginx, replicas, envs, dirs)
    finally:
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.stop()
        upstream.stop()


def chat(base: str, key: str, call: str, *, model: str = "gateway-demo",
         timeout: float = 30) -> httpx.Response:
    """One chat call named ``call`` (its prompt, and its x-topo-call in nginx's log)."""
    return httpx.post(base + CHAT, timeout=timeout,
                      headers={"Authorization": f"Bearer {key}", "x-topo-call": call},
                      json={"model": model, "messages": [{"role": "user", "content": call}]})


def concurrently(fn: Callable[[str], httpx.Response], calls: list[str]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(fn, calls))


def poll(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


# -- 1. a plan's requests per minute, once across the replicas ---------------------------

LIMIT, OVER = 9, 6


def test_a_plans_requests_per_minute_are_admitted_once_across_replicas(
        topology: Topology) -> None:
    plan = f"topo-{uuid.uuid4().hex[:8]}"
    [enterprise] = query(topology.database, sa.select(SubscriptionPlan.__table__).where(
        SubscriptionPlan.name == "enterprise"))
    row = {**enterprise._asdict(), "id": uuid.uuid4(), "name": plan,
           "requests_per_minute": LIMIT}  # what an operator adds to subscription_plans
    query(topology.database, sa.insert(SubscriptionPlan.__table__).values(**row))
    _, key = topology.user(plan)
    calls = [f"rpm-{i}" for i in range(LIMIT + OVER)]
    responses = concurrently(lambda call: chat(topology.nginx.url, key, call), calls)
    assert Counter(r.status_code for r in responses) == {200: LIMIT, 429: OVER}
    for r in responses:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limit_exceeded", r.text
            assert r.headers["x-ratelimit-limit-requests"] == str(LIMIT)
    # nginx spread them: every replica answered some, so no single one admitted them all.
    served = topology.served_by("rpm-")
    assert sorted(served) == sorted(calls)
    assert set(served.values()) == set(range(REPLICAS)), served


# -- 2. a legacy job runs exactly once ----------------------------------------------------

JOBS = 6


def test_legacy_jobs_complete_exactly_once_with_workers_on_every_replica(
        topology: Topology) -> None:
    base, upstream = topology.nginx.url, topology.upstream
    user_id, key = topology.user()
    upstream.script(Reply.by_event("openai_text.sse"))
    prompts = [f"job {i} {uuid.uuid4().hex[:6]}" for i in range(JOBS)]
    ids = []
    for prompt in prompts:
        r = httpx.post(base + "/inference", timeout=30, json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]},
            headers={"Authorization": f"Bearer {key}", "x-topo-call": f"job-{prompt}"})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    assert len(set(topology.served_by("job-").values())) > 1  # submitted to several
    text, _ = recorded_openai("openai_text.sse")
    for job_id in ids:
        view = wait_final(base, key, job_id, timeout=30)
        assert view["status"] == "completed" and view["attempts"] == 1, view
        r = httpx.get(f"{base}/inference/{job_id}/result",
                      headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["response"] == text, r.text
    # Each job reached the upstream once, whichever replica's worker claimed it.
    sent = Counter(orjson.loads(r.body)["messages"][-1]["content"]
                   for r in upstream.received)
    assert sent == Counter(prompts)
    rows = query(topology.database, sa.select(
        InferenceRequest.id, InferenceRequest.status, InferenceRequest.source)
        .where(InferenceRequest.user_id == uuid.UUID(user_id)))
    assert sorted((str(r.id), r.status, r.source) for r in rows) == sorted(
        (job_id, "completed", "legacy") for job_id in ids)


# -- 3. SSE is not buffered --------------------------------------------------------------

def test_sse_passes_through_nginx_unbuffered(topology: Topology) -> None:
    _, key = topology.user()
    gate = threading.Event()
    events = recording_events("openai_text.sse")
    # The upstream sends two events, then holds the rest until the client has seen bytes.
    topology.upstream.script(Reply(pieces=events, hang_after=2, gate=gate))
    try:
        with httpx.stream("POST", topology.nginx.url + CHAT, timeout=15,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "gpt-4o-mini", "stream": True,
                                "messages": [{"role": "user", "content": "stream"}]}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            chunks = r.iter_raw()
            first = next(chunks)  # a buffering proxy would hold this until the gate opens
            assert not gate.is_set()
            assert first.startswith(b"data: {") and b'"role":"assistant"' in first, first
            gate.set()
            body = first + b"".join(chunks)
    finally:
        gate.set()
    assert body.rstrip().endswith(b"data: [DONE]")
    content = "".join(
        choice["delta"].get("content") or ""
        for line in body.split(b"\n") if line.startswith(b"data: {")
        for choice in orjson.loads(line[6:])["choices"])
    assert content == recorded_openai("openai_text.sse")[0]


# -- 4. each replica's /metrics counts what it served ---------------------------------------

CALLS = 12


def chat_requests(replica: GatewayProcess) -> float:
    """gateway_requests_total for the chat route, any model and status, on ``replica``."""
    r = httpx.get(replica.url + "/metrics", timeout=10)
    assert r.status_code == 200
    return sum(sample.value for family in text_string_to_metric_families(r.text)
               if family.name == "gateway_requests"
               for sample in family.samples
               if sample.name == "gateway_requests_total" and sample.labels["route"] == CHAT)


def test_each_replicas_metrics_count_the_calls_it_served(topology: Topology) -> None:
    _, key = topology.user()
    calls = [f"metrics-{i}" for i in range(CALLS)]
    responses = concurrently(lambda call: chat(topology.nginx.url, key, call), calls)
    assert [r.status_code for r in responses] == [200] * CALLS
    assert set(topology.served_by("metrics-").values()) == set(range(REPLICAS))

    def counted() -> list[float]:
        return [chat_requests(replica) for replica in topology.replicas]

    def logged() -> list[int]:
        """The chat calls nginx has passed to each replica, these and earlier tests'."""
        where = {topology.address(i): i for i in range(REPLICAS)}
        served = Counter(where[f.upstreams[-1]] for f in topology.nginx.log() if f.uri == CHAT)
        return [served[i] for i in range(REPLICAS)]

    # Every chat call made through nginx so far, replica by replica. A request is counted
    # as its handler returns, and logged by nginx once it has sent the answer: both just
    # after the client got it.
    poll(lambda: counted() == logged(), f"metrics {counted()}, nginx {logged()}")


# -- 5. a killed replica loses no row --------------------------------------------------------

BEFORE, AFTER = 12, 9


def stored(database: str, user_id: str) -> Counter:
    """How many rows each prompt of the user has, and with which status."""
    rows = query(database, sa.select(InferenceRequest.prompt, InferenceRequest.status)
                 .where(InferenceRequest.user_id == uuid.UUID(user_id)))
    return Counter((row.prompt, row.status) for row in rows)


def test_killing_a_replica_loses_no_row_of_a_completed_call(topology: Topology) -> None:
    base = topology.nginx.url
    user_id, key = topology.user()
    calls = [f"kill-before-{i}" for i in range(BEFORE)]
    responses = concurrently(lambda call: chat(base, key, call), calls)
    assert [r.status_code for r in responses] == [200] * BEFORE
    served = topology.served_by("kill-before-")
    victims = [call for call, replica in served.items() if replica == VICTIM]
    assert victims, served
    # Killed the moment the answers arrived: a call's row is in the crash spool before its
    # answer's last bytes leave (storage/spool.py), so nothing is waited for.
    victim = topology.replicas[VICTIM]
    victim.kill()
    victim.stop()  # closes its log
    # Its writer never flushed: these rows are only in the spool now.
    assert not any(prompt in victims for prompt, _ in stored(topology.database, user_id))

    after = [f"kill-after-{i}" for i in range(AFTER)]
    responses = [chat(base, key, call) for call in after]  # one at a time: rr reaches all
    assert [r.status_code for r in responses] == [200] * AFTER, [r.text for r in responses]
    forwarded = topology.nginx.forwarded("kill-after-")
    dead = topology.address(VICTIM)
    assert all(f.upstreams[-1] != dead for f in forwarded.values())
    # nginx tried the dead replica once, failed to connect, passed the call on and has
    # left the replica out since (max_fails=1).
    retried = [f for f in forwarded.values() if dead in f.upstreams]
    assert len(retried) == 1 and retried[0].upstreams[0] == dead, forwarded

    log = topology.dirs[VICTIM].parent / f"gateway{VICTIM + 1}-restarted.log"
    restarted = GatewayProcess(topology.envs[VICTIM], log,
                               port=victim.port).wait_ready()
    topology.replicas[VICTIM] = restarted  # the fixture stops it
    expected = Counter((call, "completed") for call in calls + after)
    poll(lambda: stored(topology.database, user_id) == expected,
         f"rows {stored(topology.database, user_id)}")
