"""Where the workers live: a private Ray instance this process starts (`--workers`), or a
running cluster it joins (`--cluster auto|ADDR`).

A private instance is for this batch alone, so it is started locked down and leaves nothing:
- every Ray process listens on 127.0.0.1 only. Ray binds its node address to loopback where it
  does not expect multi-node clusters (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the setting Ray
  reads to choose that; a private instance never has other nodes);
- token authentication stays on, with a random token given to Ray's processes in their
  environment (`RAY_AUTH_TOKEN`), so none is written to ~/.ray/auth_token; other local users
  cannot drive it either;
- its session files go to a temporary folder of ours, removed at the end, and usage statistics
  are off;
- the dashboard is not started.
Joining a cluster uses the cluster's own settings (RAY_ADDRESS, its token) as they are.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

from invoke.errors import InvokeError

PRIVATE_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # bind to 127.0.0.1 (see the module's doc)
    "RAY_AUTH_MODE": "token",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


@dataclass
class Cluster:
    """A connection to Ray; `close()` shuts a private instance down and removes its files."""

    ray: Any
    private: bool
    temp_dir: str | None = None
    saved_env: dict[str, str | None] = field(default_factory=dict)

    def gpus(self) -> int:
        return int(self.ray.cluster_resources().get("GPU", 0))

    def cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 1))

    def close(self) -> None:
        try:
            if self.ray.is_initialized():
                self.ray.shutdown()
        finally:
            for name, value in self.saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self.saved_env = {}
            if self.temp_dir is not None:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                self.temp_dir = None


def start_private(cpus: int) -> Cluster:
    """A Ray instance on this machine for this batch: `cpus` CPU slots, the GPUs Ray finds."""
    env = {**PRIVATE_ENV, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    saved = {k: os.environ.get(k) for k in env}
    # Set before Ray is imported (it reads some of these then); its processes inherit them.
    os.environ.update(env)
    import ray

    cluster = Cluster(ray, private=True, saved_env=saved)
    cluster.temp_dir = tempfile.mkdtemp(prefix="invoke-ray-", dir=_short_temp())
    try:
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            _temp_dir=cluster.temp_dir,
        )
    except BaseException as exc:
        cluster.close()
        if isinstance(exc, Exception):
            raise InvokeError(f"could not start Ray on this machine: {_one_line(exc)}") from exc
        raise
    return cluster


def _short_temp() -> str:
    """The temporary folder, unless its path is too long for the sockets Ray makes in it (a
    Unix socket's path has at most 107 bytes): then /tmp."""
    temp = tempfile.gettempdir()
    return temp if len(temp) <= 40 else "/tmp"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def join(address: str) -> Cluster:
    """A running cluster: `auto` (RAY_ADDRESS, or the one started on this machine) or ADDR."""
    import ray

    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:
        raise InvokeError(f"--cluster {address}: could not join it: {_one_line(exc)}") from exc
    return Cluster(ray, private=False)
