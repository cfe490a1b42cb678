"""The servers of a run: the mock, the gateway (auth, limits and persistence on), nginx,
and PostgreSQL + Redis for the "production" backends."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.procs import GATEWAY_CORE, LOAD_CORE, Proc

REPO = Path(__file__).resolve().parent.parent
BENCH_EMAIL = "bench@example.com"
BENCH_PASSWORD = "bench pass 123"
# Enterprise is 3,000 rpm / 10M tpm / 100 concurrent: a benchmark would measure 429s.
PLAN_LIMITS = {"requests_per_minute": 2_000_000_000, "tokens_per_minute": 2_000_000_000,
               "concurrent_requests": 1_000_000}
# httpx's pool is capped by this setting (default 512): more open streams than that would
# wait for a pool slot and time out, so the open-streams scenario raises it.
UPSTREAM_MAX_CONNECTIONS = 20_000

# Model names the mock understands (see bench.mock_upstream): c = content chunks, d = ms gap.
NONSTREAM = "mock-c4"
PACED = {20: "mock-c20-d1", 64: "mock-c64-d1"}
BURST = {20: "mock-c20", 64: "mock-c64"}
SLOW = "mock-c100000-d1000"
# The soak's streams: token-paced like a real model (20 chunks 50 ms apart, a second each),
# so the soak's mixed load stays below the gateway's capacity.
SOAK_STREAM = "mock-c20-d50"
MODELS = [NONSTREAM, *PACED.values(), *BURST.values(), SLOW, SOAK_STREAM]
ANTHROPIC_PREFIX = "a-"
# The resilience scenario's routes (bench/scenarios_http.py): NONSTREAM balanced over two
# providers of the same mock with a fallback, and NONSTREAM behind a dead primary.
BALANCED = "mock-c4-balanced"
DEAD_PRIMARY = "mock-c4-dead-primary"


def gateway_argv() -> list[str]:
    script = Path(sys.executable).parent / "gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def start_mock(log_dir: Path) -> Proc:
    port = procs.free_port()
    return procs.start("mock", [sys.executable, "-m", "bench.mock_upstream", "--port", str(port)],
                       port=port, core=LOAD_CORE, log_dir=log_dir, env={"PYTHONPATH": str(REPO)})


def start_bare(log_dir: Path, mock_port: int) -> Proc:
    """The bare relay (bench/bare_relay.py) to the mock, pinned to the gateway's core."""
    port = procs.free_port()
    return procs.start("bare", [sys.executable, "-m", "bench.bare_relay", "--port", str(port),
                                "--upstream", f"http://127.0.0.1:{mock_port}"],
                       port=port, core=GATEWAY_CORE, log_dir=log_dir,
                       env={"PYTHONPATH": str(REPO)})


def write_config(path: Path, mock_port: int) -> None:
    models = ", ".join(f'"{m}"' for m in MODELS)
    amodels = ", ".join(f'"{ANTHROPIC_PREFIX}{m}" = "{m}"' for m in MODELS)
    path.write_text(
        "[providers.mock]\nkind = \"openai\"\n"
        f"base_url = \"http://127.0.0.1:{mock_port}/v1\"\napi_key = \"x\"\n"
        f"read_timeout = 120\nmodels = [{models}]\n\n"
        "[providers.mockanthropic]\nkind = \"anthropic\"\n"
        f"base_url = \"http://127.0.0.1:{mock_port}\"\napi_key = \"x\"\n"
        f"read_timeout = 120\nmodels = {{ {amodels} }}\n\n"
        # The same mock under a second name: a second deployment of NONSTREAM.
        "[providers.mockb]\nkind = \"openai\"\n"
        f"base_url = \"http://127.0.0.1:{mock_port}/v1\"\napi_key = \"x\"\n\n"
        # Nothing listens on port 1: refused at once; its breaker opens on the first call.
        "[providers.dead]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\n"
        "api_key = \"x\"\nmax_retries = 0\nbreaker_failures = 1\n"
        "breaker_cooldown_seconds = 3600\n\n"
        f"[models.{BALANCED}]\nfallbacks = [\"{NONSTREAM}\"]\n"
        f"targets = [ {{ provider = \"mock\", upstream = \"{NONSTREAM}\", weight = 1 }},\n"
        f"            {{ provider = \"mockb\", upstream = \"{NONSTREAM}\", weight = 1 }} ]\n\n"
        f"[models.{DEAD_PRIMARY}]\nprovider = \"dead\"\nupstream = \"{NONSTREAM}\"\n"
        f"fallbacks = [\"{NONSTREAM}\"]\n")


@dataclass
class Backends:
    """Where the gateway keeps its data: SQLite + memory limiter, or PostgreSQL + Redis."""

    label: str
    database_url: str | None = None  # None: SQLite in the data dir
    redis_url: str | None = None


def gateway_env(work: Path, mock_port: int, backends: Backends,
                variant: str | None = None) -> dict[str, str]:
    data = work / f"data-{backends.label}"
    data.mkdir(parents=True, exist_ok=True)
    config = work / "gateway.toml"
    write_config(config, mock_port)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GATEWAY_") and k not in (
               "DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY",
               "TOGETHER_API_KEY")}
    env.update(GATEWAY_DATA_DIR=str(data), GATEWAY_CONFIG=str(config),
               GATEWAY_DEMO_ENABLED="false", GATEWAY_ENV="development",
               GATEWAY_UPSTREAM_MAX_CONNECTIONS=str(UPSTREAM_MAX_CONNECTIONS),
               # Only the bench user's password is hashed with it; keys use HMAC.
               GATEWAY_BCRYPT_ROUNDS="4",
               PYTHONPATH=str(REPO))
    env.pop("BENCH_VARIANT", None)
    if variant:
        env["BENCH_VARIANT"] = variant
    if backends.database_url:
        env["DATABASE_URL"] = backends.database_url
    if backends.redis_url:
        env["REDIS_URL"] = backends.redis_url
        env["GATEWAY_RATE_LIMIT_BACKEND"] = "redis"
    return env


def _run(argv: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-1500:]}")
    return proc.stdout


def prepare_gateway(env: dict[str, str]) -> str:
    """Migrate, create the bench user on enterprise, raise the plan limits; return the key."""
    _run([*gateway_argv(), "migrate"], env)
    out = _run([*gateway_argv(), "create-user", BENCH_EMAIL, "--password", BENCH_PASSWORD,
                "--plan", "enterprise"], env)
    key = out.strip().splitlines()[-1].strip()
    sets = ", ".join(f"{k} = {v}" for k, v in PLAN_LIMITS.items())
    sql = f"UPDATE subscription_plans SET {sets} WHERE name = 'enterprise'"
    if "DATABASE_URL" in env:
        asyncio.run(_pg_execute(env["DATABASE_URL"], sql))
    else:
        with sqlite3.connect(Path(env["GATEWAY_DATA_DIR"]) / "gateway.db") as db:
            db.execute(sql)
    return key


def start_gateway(env: dict[str, str], log_dir: Path, label: str,
                  wrap: list[str] | None = None) -> Proc:
    """``gateway serve`` pinned to the gateway core (or ``bench.variants`` for experiments);
    ``wrap`` runs the module under a tool (``python -m pyinstrument ... -m``)."""
    port = procs.free_port()
    module = "bench.variants" if env.get("BENCH_VARIANT") else "gateway.cli"
    argv = ([sys.executable, "-m", module] if env.get("BENCH_VARIANT") else gateway_argv())
    if wrap:
        argv = [*wrap, "-m", module]
    return procs.start(f"gateway-{label}",
                       [*argv, "serve", "--port", str(port), "--log-level", "warning"],
                       port=port, core=GATEWAY_CORE, log_dir=log_dir, env=env)


# nginx: the floor for one proxy hop (one worker, on the gateway's core).
_NGINX_CONF = """
worker_processes 1;
worker_rlimit_nofile 65536;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 32768; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-tmp/body;
  proxy_temp_path {work}/nginx-tmp/proxy;
  fastcgi_temp_path {work}/nginx-tmp/fastcgi;
  uwsgi_temp_path {work}/nginx-tmp/uwsgi;
  scgi_temp_path {work}/nginx-tmp/scgi;
  upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 1024; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }}
  }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None)


def start_nginx(work: Path, mock_port: int, log_dir: Path) -> Proc | None:
    binary = nginx_binary()
    if binary is None:
        return None
    port = procs.free_port()
    tmp = work / "nginx-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o777)
    conf = work / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(work=work, mock_port=mock_port, port=port))
    return procs.start("nginx", [binary, "-c", str(conf), "-g", "daemon off;"], port=port,
                       core=GATEWAY_CORE, log_dir=log_dir, include_children=True)


async def _pg_execute(url: str, *statements: str, autocommit_db: str | None = None) -> None:
    import asyncpg

    dsn = re.sub(r"^postgresql\+asyncpg://", "postgresql://", url)
    if autocommit_db is not None:
        dsn = dsn.rsplit("/", 1)[0] + "/" + autocommit_db
    conn = await asyncpg.connect(dsn)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class ExternalServices:
    """PostgreSQL and Redis started by ``.ci/services.sh`` on ports of their own."""

    database_url: str
    redis_url: str
    run_dir: Path
    redis_port: int
    pg_bin: str

    def processes(self) -> list[int]:
        pids = []
        pidfile = self.run_dir / "pgdata" / "postmaster.pid"
        if pidfile.exists():
            pids.append(int(pidfile.read_text().split()[0]))
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), "info", "server"],
                             capture_output=True, text=True, check=False).stdout
        match = re.search(r"process_id:(\d+)", out)
        if match:
            pids.append(int(match.group(1)))
        return pids

    def cpu(self) -> float:
        """CPU seconds of the postmaster, its backends (live and exited) and Redis."""
        total = 0.0
        for pid in self.processes():
            try:
                total += procs.cpu_seconds(pid, with_children=True)
                total += sum(procs.cpu_seconds(c) for c in procs.children(pid))
            except OSError:
                pass
        return total

    def stop(self) -> None:
        subprocess.run(["su", "postgres", "-s", "/bin/sh", "-c",
                        f"{self.pg_bin}/pg_ctl -D {self.run_dir}/pgdata -m fast stop"],
                       capture_output=True, check=False)
        subprocess.run(["redis-cli", "-p", str(self.redis_port), "shutdown", "nosave"],
                       capture_output=True, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)


def external_missing() -> str | None:
    """Why PostgreSQL + Redis cannot be started here, or None."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return "PostgreSQL binaries not found (/usr/lib/postgresql/*/bin)"
    if not shutil.which("redis-server"):
        return "redis-server not found"
    return None


def start_external(work: Path) -> ExternalServices:
    """Start PostgreSQL and Redis on loopback (ports apart from the test suite's), pinned to
    the load core so they do not steal the gateway's CPU; create a fresh database."""
    pg_port, redis_port = procs.free_port(), procs.free_port()
    run_dir = Path(f"/tmp/gateway-bench-{os.getpid()}")
    env = {**os.environ, "PG_PORT": str(pg_port), "REDIS_PORT": str(redis_port),
           "RUN_DIR": str(run_dir), "PG_REPLICA_PORT": ""}  # no read replica to measure
    out = subprocess.run(["bash", str(REPO / ".ci" / "services.sh")], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    urls = dict(re.findall(r"export (\w+)=(\S+)", out))
    pg_bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    services = ExternalServices(urls["GATEWAY_TEST_POSTGRES_URL"],
                                urls["GATEWAY_TEST_REDIS_URL"], run_dir, redis_port, str(pg_bin))
    for pid in services.processes():
        subprocess.run(["taskset", "-a", "-cp", str(LOAD_CORE), str(pid)],
                       capture_output=True, check=False)
    asyncio.run(_pg_execute(services.database_url, "DROP DATABASE IF EXISTS bench",
                            "CREATE DATABASE bench", autocommit_db="postgres"))
    services.database_url = services.database_url.rsplit("/", 1)[0] + "/bench"
    return services
