"""Throughput and latency of `centerfocus serve` (Ray Serve, one replica) at 1, 8 and 32 concurrent HTTP clients, with
dynamic batching (up to --max_batch_size requests per forward pass) against one request at a time (max batch 1),
measured side by side on one local Ray instance (docs/benchmarks.md, "Serving").

    python benchmarks/serving_latency.py --model runs/NAME --images hw/test --requests 96 \
        --out benchmarks/results/serving_latency.json
"""

import argparse
import concurrent.futures
import json
import socket
import statistics
import sys
import time
import urllib.request
from pathlib import Path

from common import report  # benchmarks/ runs as scripts: python benchmarks/NAME.py


def _post(url: str, body: bytes) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=600) as response:
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
    return time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help="A folder of images to send.")
    parser.add_argument("--requests", type=int, default=96, help="Requests per setting.")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--max_batch_size", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import ray

    from centerfocus.tools import serving

    bodies = [p.read_bytes() for p in sorted(Path(args.images).glob("*.png"))[: args.requests]]
    bodies = (bodies * (args.requests // len(bodies) + 1))[: args.requests]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = {f"up to {args.max_batch_size}": ("batched", args.max_batch_size), "none (1 at a time)": ("single", 1)}
    rows = []
    try:
        for prefix, batch in settings.values():  # both applications up at once, on one replica each
            serving.start(args.model, port=port, name=prefix, route_prefix=f"/{prefix}", max_batch_size=batch,
                          batch_wait_ms=10)
            _post(f"http://127.0.0.1:{port}/{prefix}/caption", bodies[0])  # warm-up
        for clients in (int(c) for c in args.clients.split(",")):
            for name, (prefix, _) in settings.items():  # side by side: the same load on the machine for both
                url = f"http://127.0.0.1:{port}/{prefix}/caption"
                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    latencies = list(pool.map(lambda body, url=url: _post(url, body), bodies))
                wall = time.perf_counter() - start
                row = {"batching": name, "clients": clients, "requests": len(bodies),
                       "images_per_s": round(len(bodies) / wall, 2), "p50_ms": round(1000 * statistics.median(latencies), 1),
                       "p99_ms": round(1000 * _percentile(latencies, 0.99), 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        serving.stop()
        ray.shutdown()
    results = {"command": "python benchmarks/serving_latency.py " + " ".join(argv or sys.argv[1:]), "rows": rows}
    report(results, args.out)
    return results


if __name__ == "__main__":
    main()
