"""Running independent data tasks: in this process, on a local Dask cluster, or on an existing Dask cluster.

:func:`run_tasks` is the one executor of the data side. A task is a picklable spec handed to a module-level
function (``preprocess`` tasks: a bounded slice of the inputs that writes its own files). With one worker and
no scheduler the tasks run here, one after the other (nothing to start). Otherwise they run on Dask distributed:

* ``scheduler=None``: a local cluster of ``workers`` processes (one thread each), started and stopped here;
* ``scheduler="tcp://host:8786"`` or the path of a scheduler file: an existing cluster, started by hand
  (``dask scheduler`` + ``dask worker``) or by dask-jobqueue on SLURM / PBS.

Tasks are submitted a few at a time (at most ``2 x workers`` in flight), so the client's memory does not grow
with their number; each is run again on another worker if its worker dies (``ALLOWED_FAILURES``). Results come back as
tasks finish, in any order.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from msaformer.errors import MsaformerError

#: Times a task may lose its worker (and be run again on another) before the run fails: Dask's
#: ``distributed.scheduler.allowed-failures``, set so for a local cluster (a cluster started by hand has its own).
#: A task that raises is not retried: user errors are the same every time.
ALLOWED_FAILURES = 3
#: How long to try to reach the scheduler of ``--scheduler``.
CONNECT_TIMEOUT = "30s"


def default_workers() -> int:
    """Returns the number of usable CPU cores (at most 8)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 8))


def connect(scheduler: str | None, workers: int):
    """Returns ``(client, cluster or None)``: a Dask client of an existing cluster (``scheduler`` address or
    scheduler file) or of a new local cluster of ``workers`` processes."""
    import dask
    from distributed import Client, LocalCluster

    dask.config.set({"distributed.worker.daemon": False, "distributed.admin.tick.limit": "60s",
                     "distributed.scheduler.allowed-failures": ALLOWED_FAILURES})
    if scheduler:
        try:
            if Path(scheduler).is_file():
                return Client(scheduler_file=scheduler, timeout=CONNECT_TIMEOUT), None
            return Client(scheduler, timeout=CONNECT_TIMEOUT), None
        except (OSError, TimeoutError) as exc:
            raise MsaformerError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc})") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR, memory_limit=0)
    return Client(cluster), cluster


def run_tasks(function: Callable[[Any], Any], specs: Iterable[Any], *, workers: int = 1, scheduler: str | None = None,
              on_result: Callable[[Any], None], key: Callable[[Any], str] = repr,
              on_ready: Callable[[], None] | None = None) -> None:
    """Runs ``function(spec)`` for every spec and calls ``on_result`` with each result as it arrives.

    The first task that raises stops the run: the other tasks are cancelled and the exception is raised here
    (a task whose worker keeps dying raises :class:`~msaformer.errors.MsaformerError`). ``key(spec)`` names
    the task in the cluster (tasks with the same key are the same task); ``on_ready()`` is called once the
    workers are there (the cluster started or reached).
    """
    if workers <= 1 and not scheduler:
        if on_ready is not None:
            on_ready()
        for spec in specs:
            on_result(function(spec))
        return
    from distributed import as_completed

    client, cluster = connect(scheduler, workers)
    if on_ready is not None:
        on_ready()
    try:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})) or workers)
        specs = iter(specs)
        futures = as_completed()
        in_flight = 0

        def submit_next() -> bool:
            nonlocal in_flight
            spec = next(specs, None)
            if spec is None:
                return False
            futures.add(client.submit(function, spec, key=key(spec), pure=False))
            in_flight += 1
            return True

        for _ in range(2 * n_workers):
            if not submit_next():
                break
        for future in futures:
            in_flight -= 1
            try:
                result = future.result()
            except BaseException as exc:
                _cancel(client, futures)
                if type(exc).__name__ == "KilledWorker":
                    raise MsaformerError(
                        f"task {future.key} was lost with its worker too often (more than the scheduler's "
                        f"allowed-failures, {ALLOWED_FAILURES} here); check the workers' memory and logs, then re-run "
                        "with --resume"
                    ) from None
                raise
            on_result(result)
            submit_next()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _cancel(client, futures) -> None:
    try:
        client.cancel(list(futures.futures))
    except Exception:  # noqa: BLE001 - the run is failing anyway; the first error is the one to report
        pass
