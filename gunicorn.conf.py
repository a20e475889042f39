"""gunicorn's settings for `gptlite.api:app`, read by gunicorn from the directory it starts in (the repository root):
uvicorn workers, whose Prometheus metrics `/metrics` sums (taught in nbs/11_api.ipynb)."""
import glob
import os
import tempfile

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):      # before prometheus_client is imported, here or in a worker
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gptlite-metrics-")

worker_class = "uvicorn.workers.UvicornWorker"
timeout = 120                                            # seconds a worker may take to load the model and answer

def on_starting(server):
    "A new start: the files of an earlier run's workers are not this run's counts."
    for f in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")): os.remove(f)

def child_exit(server, worker):
    "A worker that exits: its gauges no longer count (its counters still do)."
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)
