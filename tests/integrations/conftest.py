"""A real two-node Ray cluster on this machine (a head and a worker node process, one CPU each), and the synthetic
repos the Ray tests serve and score. The nodes are ``ray start --block`` processes of their own: stopping them
with SIGTERM takes their raylets and workers down, and nothing else on the machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pipelines.conftest import mnli_repo, qa_repo  # noqa: F401  (shared synthetic repos)

RAY = str(Path(sys.executable).with_name("ray"))


@dataclass
class RayCluster:
    address: str
    nodes: list[subprocess.Popen]
    temp_dir: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {**_ray_env(), "RAY_ADDRESS": self.address, **extra}


def _ray_env() -> dict[str, str]:
    """No usage reports, and no token authentication (Ray turns it on once any local Ray has left ~/.ray/auth_token)."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}  # nodes stop at once on SIGTERM (no 30 s drain)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(*args: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True, env=_ray_env())


def _wait_for_cpus(address: str, cpus: int, timeout: float) -> str:
    """Join the cluster from a throwaway driver until it counts ``cpus`` CPUs; what went wrong, or "" when it does."""
    code = ("import ray, sys, time\n"
            f"ray.init(address={address!r}, logging_level='ERROR')\n"
            f"deadline = time.monotonic() + {timeout}\n"
            f"while ray.cluster_resources().get('CPU', 0) < {cpus} and time.monotonic() < deadline:\n"
            "    time.sleep(0.2)\n"
            f"sys.exit(0 if ray.cluster_resources().get('CPU', 0) >= {cpus} else 1)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout + 60, env=_ray_env())
    return "" if proc.returncode == 0 else proc.stderr[-3000:] or "timed out"


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    logs = tmp_path_factory.mktemp("ray-logs")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_node("--head", "--port", str(port), "--include-dashboard", "false", log=logs / "head.log")]
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([RAY, "health-check", "--address", address], capture_output=True, env=_ray_env()).returncode != 0:
            assert nodes[0].poll() is None and time.monotonic() < deadline, (logs / "head.log").read_text()[-3000:]
            time.sleep(0.5)
        nodes.append(_node("--address", address, log=logs / "worker.log"))
        problem = _wait_for_cpus(address, 2, timeout=120)
        assert not problem, f"{problem}\n{(logs / 'worker.log').read_text()[-3000:]}"
        yield RayCluster(address, nodes, logs)
    finally:
        for node in reversed(nodes):  # the worker first, then the head
            if node.poll() is None:
                node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        _forget(address)


def _forget(address: str) -> None:
    """Remove Ray's note of the latest cluster when it names ours: a later ``ray.init()`` would wait on a dead one."""
    note = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    try:
        if note.read_text().strip().rsplit(":", 1)[-1] == address.rsplit(":", 1)[-1]:
            note.unlink()
    except OSError:
        pass
