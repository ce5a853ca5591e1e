"""Batches beyond one process: `--workers N|auto` (a Ray instance of our own, on this machine)
and `--cluster auto|ADDR` (a running Ray cluster).

The `invoke` process stays the driver: it reads, plans and checks every line as a one-process
batch does (the same Session), hands the Jobs (plain data) to worker processes that each keep a
model loaded, takes back their pictures and writes every file itself, in input-line order. So
the files, names, PNG chunks and logs are those a one-process run writes; no shared filesystem
is needed for outputs.

    lookahead.py  the batch's lines planned ahead of their turn (their Jobs sent early)
    pool.py       the workers: who draws what, a dead worker replaced, progress
    cluster.py    starting a private Ray instance (loopback only, no token on disk) or joining one
    worker.py     what runs in each worker: a model cache and the one-process JobRunner
    runner.py     the JobRunner the session is given: results from the pool

Ray is an optional extra (`pip install 'invoke-dream[ray]'`); only pool.py and cluster.py
import it, and only when --workers or --cluster asks for it.
"""

from __future__ import annotations

INSTALL_HINT = (
    "{switch} runs a batch on Ray, which is not installed: "
    "pip install 'invoke-dream[ray]' (or pip install 'ray>=2.60')"
)


def ray_missing(switch: str) -> str | None:
    """The one-line install hint when Ray cannot be imported; None when it can."""
    from importlib.util import find_spec

    if find_spec("ray") is None:
        return INSTALL_HINT.format(switch=switch)
    return None
