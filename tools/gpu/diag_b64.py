"""On CUDA: how long each run of a padded batch shape takes after `Runtime.warm_up(64)`, all on one thread.

The diagnosis behind bench/results/gpu/v4/diag-b64.txt (tools/gpu/diag_b64.sh runs it there). Argument:
the provider (cuda, or cpu for a rehearsal without a GPU).
"""

import concurrent.futures as cf
import faulthandler
import os
import sys
import time

import numpy as np

from app.preprocess import decode
from app.repository import configured
from app.runtime import Runtime
from app.settings import Settings
from bench.images import load_jpegs

faulthandler.dump_traceback_later(110, exit=True)
v = configured(Settings())
jpegs, _ = load_jpegs(64)
px = np.stack([decode(b, v.metadata.preprocessing) for b in jpegs])
ex = cf.ThreadPoolExecutor(1)
prov = sys.argv[1] if len(sys.argv) > 1 else "cuda"
rt = Runtime(v, precision="fp16", providers=prov, intra_op_threads=2)


def timed(label, fn, timeout=20):
    t = time.perf_counter()
    fut = ex.submit(fn)
    try:
        fut.result(timeout=timeout)
        print(f"{label}: {time.perf_counter() - t:.2f}s", flush=True)
    except cf.TimeoutError:
        print(f"{label}: still running after {timeout}s; stacks:", flush=True)
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()
        os._exit(3)


timed("warm_up(64)", lambda: rt.warm_up(64))
for n in (16, 32, 48, 64, 64, 48, 33):
    timed(f"run {n}", lambda n=n: rt.run(px[:n]))
print("all ran")
