"""The archive flow: discover -> plan shards -> NLP per shard in parallel processes -> aggregate.

Incremental and crash-safe (see :mod:`pipeline.archive`): run it again on the same output
folder and only new or changed notes are processed; kill it at any point and the next run
finishes the job with the same result. Tasks pass file paths, ids and counts -- never note
text -- so Prefect's parameters, results and logs hold no patient text.

Parallelism: ``workers`` local processes (each builds the spaCy pipeline once), or a Dask
cluster through prefect-dask's DaskTaskRunner (``dask`` = scheduler address, or "local").
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from flows.settings import configure_prefect

configure_prefect()  # before Prefect is imported: local home, analytics off

import pandas as pd  # noqa: E402
from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from pipeline import archive  # noqa: E402
from pipeline.errors import CalcmineError  # noqa: E402
from pipeline.runner import Timer  # noqa: E402

_POOL: ProcessPoolExecutor | None = None  # set while a local multi-process run is active


def _retry_io(task, task_run, state) -> bool:
    """Retry I/O hiccups, never a bad input (a CalcmineError will fail the same way again)."""
    try:
        state.result()
    except CalcmineError:
        return False
    except Exception:  # noqa: BLE001
        return True
    return False


def _warm_worker() -> None:
    from pipeline.process import default_nlp

    default_nlp()


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=_retry_io)
def plan_shards(inputs: list[str], out: str, columns: dict, shard_size: int, sql: str | None, query: str | None) -> dict:
    sources = archive.discover(inputs, sql, query)
    store = archive.ShardStore(out)
    plan = store.plan(sources, columns, shard_size)
    return {"staged": plan.staged, "counts": plan.counts, "failures": plan.failures, "read": plan.read,
            "version": store.version}


@task
def run_shard(staged: str, out: str, version: str) -> dict:
    if _POOL is not None:
        return _POOL.submit(archive.process_shard, staged, out, version).result()
    return archive.process_shard(staged, out, version)


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=_retry_io)
def aggregate(out: str, version: str, plan: dict, model: str | None, labs: str | None, report: bool, timings: dict) -> dict:
    # buckets of patients are classified in the worker processes when the run has them
    return archive.aggregate_run(out, version, plan, model, labs, report, timings, pool=_POOL)


@flow(name="calcmine-archive", log_prints=False)
def calcmine_archive(
    inputs: list[str],
    out: str = "results",
    workers: int = 1,
    sql: str | None = None,
    query: str | None = None,
    model: str | None = None,
    labs: str | None = None,
    shard_size: int = archive.DEFAULT_SHARD_SIZE,
    report: bool = True,
    id_col: str = "note_id",
    patient_col: str = "patient_id",
    text_col: str = "text",
) -> dict:
    """Process note archives into calcmine's result tables, incrementally."""
    global _POOL
    logger = get_run_logger()
    timer = Timer()
    columns = {"id": id_col, "patient": patient_col, "text": text_col}
    plan = plan_shards(inputs, out, columns, shard_size, sql, query)
    timer.mark("plan")
    c = plan["counts"]
    logger.info("%d notes seen: %d new, %d changed, %d unchanged, %d invalid; %d shards to process",
                c["seen"], c["new"], c["changed"], c["unchanged"], c["invalid"], len(plan["staged"]))
    total = c["new"] + c["changed"]
    done, started = 0, time.perf_counter()
    try:
        if plan["staged"]:
            if workers > 1 and _POOL is None:
                _POOL = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_warm_worker, max_tasks_per_child=archive.WORKER_TASKS)
            futures = run_shard.map(plan["staged"], out=out, version=plan["version"])
            for fut in as_completed(futures):
                result = fut.result()
                done += result["notes"]
                rate = done / max(time.perf_counter() - started, 1e-9)
                eta = (total - done) / rate if rate else float("nan")
                logger.info("progress: %d/%d notes, %.0f notes/s, ETA %.0f s", done, total, rate, eta)
        timer.mark("nlp")
        result = aggregate(out, plan["version"], plan, model, labs, report,
                           timer.marks | {"notes_per_s": round(done / max(timer.marks.get("nlp", 1e-9), 1e-9), 1)})
    finally:
        if _POOL is not None:
            _POOL.shutdown()
            _POOL = None
    return result


def with_runner(workers: int, dask: str | None):
    """The flow with the task runner for ``workers`` / ``dask``."""
    if dask:
        from prefect_dask import DaskTaskRunner

        if dask == "local":
            runner = DaskTaskRunner(cluster_kwargs={"n_workers": max(workers, 1), "threads_per_worker": 1, "processes": True})
        else:
            runner = DaskTaskRunner(address=dask)
        return calcmine_archive.with_options(task_runner=runner)
    return calcmine_archive.with_options(task_runner=ThreadPoolTaskRunner(max_workers=max(workers, 1)))


def build_deployment(args):
    """A deployment of the archive flow on a cron schedule (served by ``calcmine schedule``)."""
    parameters = {
        "inputs": [str(i) for i in args.inputs], "out": args.out, "workers": args.workers,
        "sql": args.sql, "query": args.query, "model": args.model, "labs": args.labs,
    }
    return with_runner(args.workers, None).to_deployment(name=args.name, cron=args.cron, parameters=parameters)
