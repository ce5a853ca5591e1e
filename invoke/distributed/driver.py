"""A batch on workers, put together: the Ray connection, the pool, the session's JobRunner and
seed book, and the lookahead over the batch's lines. __main__ runs the batch on `session` with
`lines(...)` as its lines, then calls `close()`, whatever happened."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from invoke.distributed.cluster import Cluster, join, start_private
from invoke.distributed.lookahead import Lookahead
from invoke.distributed.pool import Pool, Progress
from invoke.distributed.runner import PoolRunner, SeedBook
from invoke.errors import InvokeError

WINDOW_PER_WORKER = 4  # Jobs kept planned ahead, per worker (each waits for a free worker)


@dataclass
class OnWorkers:
    cluster: Cluster
    pool: Pool
    session: Any
    book: SeedBook

    def lines(self, lines: Iterable[Any]) -> Lookahead:
        window = WINDOW_PER_WORKER * len(self.pool.slots)
        return Lookahead(lines, self.session, self.pool, self.book, window)

    def close(self) -> str:
        """Shut the workers down (a private Ray instance and its files go); the batch's
        throughput and overhead, in one line."""
        try:
            return self.pool.summary()
        finally:
            self.pool.progress.close()
            self.cluster.close()


def auto_count(gpus: int, cpus: int) -> int:
    """--workers auto: one a GPU; without GPUs, one per 4 CPUs (each worker's torch uses the
    CPUs it is given), at least one."""
    return gpus if gpus else max(1, cpus // 4)


def threads_each(threads: int | None, cpus: int, count: int) -> int:
    """torch CPU threads in each worker: --threads when given, else this machine's CPUs shared."""
    return threads or max(1, cpus // count)


def start(
    session: Any,
    *,
    workers: str | None,
    cluster: str | None,
    note: Callable[[str], None],
    progress: Callable[[int], Progress],
) -> OnWorkers:
    """Start (or join) Ray and the workers for `session` (made with remote=True)."""
    settings = session.settings
    wanted = None if workers in (None, "auto") else int(workers)
    cpus = os.cpu_count() or 1
    connection = join(cluster) if cluster else start_private(max(cpus, wanted or 1))
    try:
        gpus = 0 if settings.device in ("cpu", "mps") else connection.gpus()
        count = wanted or auto_count(gpus, connection.cpus() if cluster else cpus)
        if gpus and count > gpus:
            raise InvokeError(
                f"--workers {count}: Ray sees {gpus} GPU{'s' if gpus != 1 else ''}, one a "
                f"worker; use --workers {gpus} or auto (or --device cpu)"
            )
        # On a GPU Ray gives each worker its own, which the worker sees as "cuda".
        worker_settings = replace(settings, device="cuda") if gpus else settings
        threads = threads_each(settings.threads, cpus, count)
        where = "GPU" if gpus else f"{threads} CPU thread{'s' if threads != 1 else ''}"
        note(f"starting {count} worker{'s' if count != 1 else ''} ({where} each)...")
        pool = Pool(
            connection,
            worker_settings,
            count=count,
            threads=threads,
            gpus_each=1 if gpus else 0,
            note=note,
            progress=progress(count),
        )
    except BaseException:
        connection.close()
        raise
    session.jobs = PoolRunner(pool, session.models)
    book = SeedBook()
    session.fresh_seed = book.take
    return OnWorkers(connection, pool, session, book)
