"""Where the benchmark's tasks run: in this process (`run_serial`), in a pool of spawned
processes (`run_pool`), or as Ray tasks on a local Ray or a cluster (`ray_init`,
`run_ray`). Each hands every finished row (or list of rows, for a joint task) to
``take`` as it arrives; all give the same numbers (one thread per worker)."""
from __future__ import annotations

import os
from pathlib import Path

from .peers import GSI_CODECS
from .tasks import ROW_KEYS, BenchError, init_worker, one_thread, run_unit


def run_serial(tasks: list[dict], take) -> None:
    for t in tasks:
        take(run_unit(t))


def run_pool(tasks: list[dict], take, jobs: int) -> None:
    """`jobs` spawned worker processes, one torch thread each."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(jobs, len(tasks)), initializer=init_worker, initargs=(jobs,)) as pool:
        for row in pool.imap_unordered(run_unit, tasks, chunksize=1):
            take(row)


def _ray_unit(task: dict, data: bytes) -> dict:
    """A Ray task: one encode on one thread (on cuda when the task holds a GPU)."""
    one_thread()
    return run_unit(task, data)

def ray_init(address: str | None = None, num_cpus: int | None = None):
    """Connect to Ray: ``address`` given -> that cluster; else a local Ray with ``num_cpus``
    CPUs (None: all).  Reuses a Ray already initialised in this process.  Returns
    (ray module, whether this call started it).  Raises BenchError when Ray is missing."""
    try:
        import ray
    except ImportError:
        raise BenchError("--ray needs Ray: pip install 'gscodec[cluster]' "
                         "(ray[default]>=2.9)") from None
    if ray.is_initialized():
        return ray, False
    import logging
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    quiet = {"log_to_driver": False, "configure_logging": True, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **quiet)
    else:
        # Workers import this very copy of gscodec (the checkout, not another install).
        pkg_parent = str(Path(__file__).resolve().parents[2])
        pp = os.pathsep.join([pkg_parent] + ([os.environ["PYTHONPATH"]]
                                             if os.environ.get("PYTHONPATH") else []))
        ray.init(num_cpus=num_cpus, include_dashboard=False,
                 runtime_env={"env_vars": {"PYTHONPATH": pp}}, **quiet)
    return ray, True

def run_ray(ray, tasks: list[dict], take) -> None:
    """Submit every task, hand each finished row to ``take`` as it arrives."""
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0

    def on_gpu(t):
        name, opts = t["spec"]
        return dict(t, spec=(name, {**opts, "device": "cuda"}))

    unit = ray.remote(max_retries=1)(_ray_unit)
    refs: dict = {}
    pending = {}
    for t in tasks:
        if t["path"] not in refs:
            refs[t["path"]] = ray.put(Path(t["path"]).read_bytes())
        if t["codec"] in GSI_CODECS and has_gpu:
            t = on_gpu(t)
            if "joint" in t:
                t["joint"] = [on_gpu(x) for x in t["joint"]]
            fut = unit.options(num_cpus=1, num_gpus=1).remote(t, refs[t["path"]])
        else:
            fut = unit.options(num_cpus=1).remote(t, refs[t["path"]])
        pending[fut] = t
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for fut in done:
                t = pending.pop(fut)
                try:
                    row = ray.get(fut)
                except Exception as e:  # a worker that died, a task Ray could not run
                    why = f"Ray: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    row = [dict({k: x[k] for k in ROW_KEYS}, error=why)
                           for x in t.get("joint", [t])]
                take(row)
    finally:
        for fut in pending:
            try:
                ray.cancel(fut, force=True)
            except Exception:
                pass
