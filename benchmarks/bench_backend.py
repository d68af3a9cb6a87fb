"""Latency and throughput of the ML backend's /predict vs the adapter's own time on the same images.

A real backend (``detector-al serve``, uvicorn) is started as a child process; tasks point at local files,
so no image fetch is counted (the target is "at most 1.2x the adapter's time, plus the image fetch").
Printed, measured in one run:

* one-task latency: median over alternating blocks of ``POST /predict`` with 1 task and ``Detector.predict`` of
  the same single image;
* a 100-task batch: ``POST /predict`` with 100 tasks vs ``Detector.predict`` of the same 100 images;
* the two ratios;
* the HTTP layer's own share: each answer's ``Server-Timing: predict;dur=`` (the server's fetch, inference,
  scoring and store record) against the request's time seen by the client. Unlike the adapter ratio, this one
  compares two clocks of the same process's work, so it does not move with the machine's speed between processes.

Usage: ``python benchmarks/bench_backend.py [--model W] [--repeats 10] [--blocks 6]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests


def main() -> None:
    from detector_al.demo.bootstrap_model import ensure_bootstrap_model
    from detector_al.label_studio.local_server import free_port
    from detector_al.model.detector import Detector
    from detector_al.policy.ceal import CealConfig
    from detector_al.policy.decision import views_needed
    from detector_al.policy.strategies import DEFAULT_STRATEGY, get_strategy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--images", type=Path, default=Path("sample_data/images/pool"))
    ap.add_argument("--repeats", type=int, default=10, help="single-task requests per block")
    ap.add_argument("--blocks", type=int, default=6, help="alternating blocks of /predict and adapter calls")
    args = ap.parse_args()
    weights = args.model or str(ensure_bootstrap_model())
    images = sorted(args.images.glob("*.jpg"))[:100]
    config = Path("sample_data/label_config.xml").read_text()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        # images are sent as local paths: the backend reads them only under its local-files root
        env = {
            **os.environ,
            "MODEL_DIR": str(Path(tmp) / "models"),
            "LOCAL_FILES_DOCUMENT_ROOT": str(args.images.resolve()),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "detector_al", "serve", "--model", weights, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):
                try:
                    if requests.get(f"{url}/health", timeout=1).ok:
                        break
                except requests.RequestException:
                    time.sleep(0.2)
            det = Detector.load(weights, conf=0.05)
            session = requests.Session()
            server: list[float] = []  # the server's own prediction time of each request

            def post(paths):
                body = {
                    "tasks": [{"id": i + 1, "data": {"image": str(p.resolve())}} for i, p in enumerate(paths)],
                    "label_config": config,
                    "project": "1.1",
                }
                t = time.perf_counter()
                r = session.post(f"{url}/predict", json=body, timeout=600)
                r.raise_for_status()
                elapsed = time.perf_counter() - t
                server.append(float(r.headers["Server-Timing"].split("dur=")[1]) / 1000)
                return elapsed

            views = views_needed(get_strategy(DEFAULT_STRATEGY), CealConfig())  # what the server runs

            def adapter(paths):
                t = time.perf_counter()
                list(det.predict([str(p) for p in paths], views=views))
                return time.perf_counter() - t

            post(images[:16])
            adapter(images[:16])  # warm-up both
            # alternating blocks, so that a slow spell of the machine hits both sides alike
            server.clear()
            one_api, one_ad = [], []
            for block in range(args.blocks):
                for side, times in ((post, one_api), (adapter, one_ad)):
                    times.extend(
                        side(images[i % 100 : i % 100 + 1]) for i in range(block, 100, args.blocks)[: args.repeats]
                    )
            one_server = statistics.median(server)
            one_api, one_ad = statistics.median(one_api), statistics.median(one_ad)
            many_api, many_ad = [], []
            for _ in range(3):
                many_api.append(post(images))
                many_ad.append(adapter(images))
            many_api, many_ad = min(many_api), min(many_ad)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"model {weights}, {det.imgsz} px; tasks point at local files (no fetch)")
    print(
        f"1 task   : /predict {1000 * one_api:7.1f} ms   adapter {1000 * one_ad:7.1f} ms   "
        f"ratio {one_api / one_ad:5.2f}x (target <= 1.2x)"
    )
    print(
        f"1 task   : server's own prediction {1000 * one_server:5.1f} ms (Server-Timing); the HTTP layer adds "
        f"{1000 * (one_api - one_server):4.1f} ms: /predict / server prediction {one_api / one_server:5.2f}x"
    )
    print(
        f"100 tasks: /predict {len(images) / many_api:7.1f} img/s adapter {len(images) / many_ad:7.1f} img/s "
        f"ratio {many_api / many_ad:5.2f}x (target <= 1.2x)"
    )


if __name__ == "__main__":
    main()
