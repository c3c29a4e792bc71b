"""A real Prometheus server (the Debian binary) for the tests, configured from the shipped file.

:func:`loopback_config` keeps the shipped ``docker/prometheus/prometheus.yml`` (its jobs and
metrics paths) and only swaps each job's service discovery for a static loopback target and the
scrape interval for 1 s, so what the test proves about scraping holds for the deployment's jobs.
The config is written as JSON, which Prometheus reads as YAML.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.docker.services import DOCKER, Service, free_port, http_get, spawn

SHIPPED = DOCKER / "prometheus" / "prometheus.yml"
DISCOVERY = ("static_configs", "dns_sd_configs", "file_sd_configs", "docker_sd_configs")


def shipped_config() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def loopback_config(targets: dict[str, str], interval: str = "1s") -> dict:
    """The shipped config with ``targets[job]`` (``127.0.0.1:PORT``) as each job's only target."""
    config = shipped_config()
    config["global"] = {**config.get("global", {}), "scrape_interval": interval,
                        "scrape_timeout": interval, "evaluation_interval": interval}
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    missing = sorted(set(targets) ^ set(jobs))
    if missing:
        raise ValueError(f"jobs of {SHIPPED} and the test's targets differ: {missing}")
    for name, job in jobs.items():
        for key in DISCOVERY:
            job.pop(key, None)
        job["static_configs"] = [{"targets": [targets[name]]}]
    return config


@dataclass
class Prometheus:
    """A running server and its HTTP API."""

    service: Service

    def query(self, expr: str) -> list[dict]:
        """Instant query: the result vector (raises with Prometheus's error if it refuses)."""
        url = f"{self.service.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, body = http_get(url)
        reply = json.loads(body)
        if status != 200 or reply.get("status") != "success":
            raise AssertionError(f"Prometheus refused {expr!r}: {reply.get('error', body[:200])}")
        return reply["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (``None`` if the vector is empty)."""
        result = self.query(expr)
        assert len(result) <= 1, f"{expr!r} gave {len(result)} series"
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> dict[str, float]:
        """``up`` by job."""
        return {r["metric"]["job"]: float(r["value"][1]) for r in self.query("up")}


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise RuntimeError("prometheus is not installed: run `bash .ci/setup --test` (apt)")
    return path


def start_prometheus(workdir: Path, config: dict) -> Prometheus:
    """Start Prometheus on a free loopback port with ``config``; wait until it is ready."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "prometheus.json"
    config_path.write_text(json.dumps(config, indent=1))
    port = free_port()
    cmd = [prometheus_binary(), f"--config.file={config_path}",
           f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
           "--log.level=warn"]
    service = spawn("prometheus", cmd, port, workdir)
    service.wait_http("/-/ready", timeout_s=30)
    return Prometheus(service)
