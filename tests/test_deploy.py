"""The deployment files, checked without a Docker engine: the compose file's structure, the
Dockerfile's stages, user and sources, what .dockerignore leaves out, and the image's
health check run against a real gateway."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.processes import GatewayProcess, free_port, gateway_env

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "llm-gateway:local"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def gateway_services(compose: dict) -> dict[str, dict]:
    """The services that run ``gateway serve``: the image's default command."""
    return {name: svc for name, svc in compose["services"].items()
            if svc.get("image") == IMAGE and "command" not in svc}


def test_compose_builds_the_image_once_and_runs_it_everywhere(compose: dict) -> None:
    services = compose["services"]
    builders = [name for name, svc in services.items() if "build" in svc]
    assert builders == ["migrate"], builders
    build = services["migrate"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    assert "dockerfile_inline" not in build
    for name, svc in services.items():
        if svc.get("image") == IMAGE and name != "migrate":
            assert svc["pull_policy"] == "never", name  # only the built image will do
    assert services["migrate"]["command"] == ["gateway", "migrate"]
    assert services["migrate"]["restart"] == "no"


def test_compose_health_checks_and_start_order(compose: dict, dockerfile: list[str]) -> None:
    services = compose["services"]
    image_check = ["python", *healthcheck_command(dockerfile)[1:]]
    gateways = gateway_services(compose)
    assert sorted(gateways) == ["gateway1", "gateway2", "gateway3"]
    for name, svc in gateways.items():
        check = svc["healthcheck"]["test"]
        assert check[0] == "CMD" and "/ready" in " ".join(check), (name, check)
        assert check[1:] == image_check, name  # the image's check, run below
        assert svc["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"}}, name
        # Behind nginx: forwarded headers count, and uvicorn believes them from nginx.
        env = svc["environment"]
        assert env["GATEWAY_TRUST_FORWARDED"] == "true" and env["FORWARDED_ALLOW_IPS"]
        assert env["GATEWAY_LOG_FORMAT"] == "json"
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["healthcheck"] == {"disable": True}
    assert services["nginx"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in gateways}
    for name in gateways:
        volume = services[name]["volumes"][0].split(":")[0]
        assert volume in compose["volumes"], volume
    assert len({services[n]["volumes"][0] for n in gateways}) == len(gateways)


def test_nginx_balances_over_exactly_the_compose_gateways(compose: dict) -> None:
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = re.findall(r"^\s*server\s+([\w.-]+):(\d+)(\s[^;]*)?;", site, re.M)
    assert sorted(s[:2] for s in servers) == [
        (name, "8000") for name in sorted(gateway_services(compose))]
    # A stopped replica's requests go to the next one (tests/deploy/test_topology.py kills
    # one); a request a replica received is never sent again (no non_idempotent).
    assert all("max_fails=" in s[2] and "fail_timeout=" in s[2] for s in servers), servers
    assert re.search(r"^\s*proxy_next_upstream error timeout;", site, re.M)
    assert not re.search(r"^\s*proxy_next_upstream\s[^;#]*non_idempotent", site, re.M)
    assert compose["services"]["nginx"]["volumes"] == [
        "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro"]


def test_dockerfile_is_multi_stage_non_root_with_a_ready_check(dockerfile: list[str]) -> None:
    froms = [line for line in dockerfile if line.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].endswith(" AS build"), froms
    final = dockerfile[dockerfile.index(froms[1]):]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    assert any(line.startswith("COPY --from=build ") for line in final)
    [check] = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert "/ready" in check and " CMD [" in check
    cmd = [line for line in final if line.startswith("CMD ")][-1]
    assert json.loads(cmd[4:])[:2] == ["gateway", "serve"]


def test_dockerfile_copies_every_package_and_dockerignore_keeps_secrets_out(
        dockerfile: list[str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set()
    for line in dockerfile:
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(line.split()[1:-1])
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= copied, copied
    for source in copied:
        assert (ROOT / source).exists(), source

    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]

    def excluded(path: str) -> bool:
        # Docker matches each pattern against the path and, for a directory, its contents.
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return any(fnmatch.fnmatch(p, pattern.rstrip("/")) or
                   fnmatch.fnmatch(p, pattern.rstrip("/").removeprefix("**/")) or
                   fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern.removeprefix("**/"))
                   for p in prefixes for pattern in ignored)

    for path in (".venv/bin/python", "data/gateway.db", "data/.jwt_secret",
                 "data/.key_hash_secret", ".git/HEAD", "bench/results/run.json",
                 "elsewhere/.key_hash_secret"):
        assert excluded(path), path
    for source in copied:
        assert not excluded(source), source


def healthcheck_command(dockerfile: list[str]) -> list[str]:
    [check] = [line for line in dockerfile if line.startswith("HEALTHCHECK ")]
    command = json.loads(check.split(" CMD ", 1)[1])
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_the_image_health_check_passes_on_a_ready_gateway_only(
        dockerfile: list[str], tmp_path: Path) -> None:
    command = healthcheck_command(dockerfile)
    proc = GatewayProcess(gateway_env(tmp_path / "data"), tmp_path / "serve.log")
    try:
        proc.wait_ready()
        ready = subprocess.run(command, env={"GATEWAY_PORT": str(proc.port)},
                               capture_output=True, timeout=30)
        assert ready.returncode == 0, ready.stderr
    finally:
        proc.stop()
    nothing = subprocess.run(command, env={"GATEWAY_PORT": str(free_port())},
                             capture_output=True, timeout=30)
    assert nothing.returncode != 0
