"""Throughput and latency of `sonodiff serve` on 127.0.0.1, with the queue's micro-batching on and off in one run.

Each mode runs a real server (`sonodiff serve` in its own process, ``--threads`` torch threads, one worker);
``N`` client threads each send ``--per-client`` POST /generate requests back to back (digits cycling, seed per
request, the model's default settings, so batching can share network calls). A request's latency runs from
sending it to having the whole WAV. Throughput: clips delivered per second of wall time. The reference row is
the same server serving requests one by one (``--no-batching``); the ratio is batched / one-by-one at the same
number of clients (the issue's goal: at least 1.5 at 16 clients). Then one streamed request
(GET /generate/stream, ``--stream-seconds`` of audio) measures time to first audio against the whole stream.

    python scripts/bench_serve.py --json runs/bench_serve.json
    python scripts/bench_serve.py --quick          # 1 and 4 clients, fewer requests
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, models, threads, batching, max_batch, queue_size):
        self.port = _free_port()
        cmd = [sys.executable, "-m", "sonodiff", "serve", "--port", str(self.port), "--threads", str(threads),
               "--max-batch", str(max_batch), "--queue-size", str(queue_size), "--log-level", "warning"]
        for m in models:
            cmd += ["--model", m]
        if not batching:
            cmd.append("--no-batching")
        import tempfile

        self.log = tempfile.TemporaryFile(mode="w+")  # not a pipe: a chatty server must never block on its output
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        import httpx

        end = time.monotonic() + 180
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"the server exited: {self.log.read()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start in 180 s")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def pct(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def load(url, model, prompts, clients, per_client):
    import httpx

    lat, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(c):
        with httpx.Client(timeout=600) as h:
            barrier.wait()
            for k in range(per_client):
                i = c * per_client + k
                body = {"model": model, "prompt": prompts[i % len(prompts)], "seed": i}
                t0 = time.monotonic()
                r = h.post(url + "/generate", json=body)
                dt = time.monotonic() - t0
                with lock:
                    (lat if r.status_code == 200 else errors).append(dt if r.status_code == 200 else r.status_code)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    if not lat:
        raise RuntimeError(f"every request of {clients} client(s) failed: statuses {sorted(set(errors))}")
    return {"clients": clients, "requests": clients * per_client, "ok": len(lat), "errors": errors,
            "wall_s": wall, "clips_per_s": len(lat) / wall, "p50_s": pct(lat, 50), "p90_s": pct(lat, 90),
            "p99_s": pct(lat, 99), "mean_s": statistics.fmean(lat)}


def stream_ttfa(url, model, prompt, seconds):
    import httpx

    t0 = time.monotonic()
    first, n = None, 0
    with httpx.stream("GET", url + "/generate/stream", params={"model": model, "prompt": prompt,
                                                                "duration": seconds}, timeout=600) as r:
        r.raise_for_status()
        for piece in r.iter_raw():
            n += len(piece)
            if first is None and n > 44:
                first = time.monotonic() - t0
    return {"model": model, "seconds": seconds, "ttfa_s": first, "total_s": time.monotonic() - t0, "bytes": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fsdd_digits_mel")
    ap.add_argument("--prompts", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--per-client", type=int, default=0, help="requests per client (default: 8 // clients + 2)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--stream-model", default="corpus_sfx_mel")
    ap.add_argument("--stream-prompt", default="rain falling on a tin roof")
    ap.add_argument("--stream-seconds", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.quick:
        args.clients = [1, 4]
    prompts = args.prompts.split(",")
    models = [args.model] + ([args.stream_model] if args.stream_model and args.stream_model != args.model else [])
    rows = []
    for batching in (False, True):
        with Server(models, args.threads, batching, args.max_batch, queue_size=64) as srv:
            load(srv.url, args.model, prompts, 1, 1)  # warm-up
            for n in args.clients:
                per = args.per_client or (8 // n + 2 if not args.quick else 2)
                r = load(srv.url, args.model, prompts, n, per)
                r["mode"] = "micro-batched" if batching else "one by one"
                rows.append(r)
                print(f"  {r['mode']:14s} {n:3d} clients: {r['clips_per_s']:.2f} clips/s", flush=True)
            stream = stream_ttfa(srv.url, args.stream_model, args.stream_prompt, args.stream_seconds) \
                if batching and args.stream_model else None
    ref = {r["clients"]: r for r in rows if r["mode"] == "one by one"}
    print(f"\nsonodiff serve, {args.model}, {args.threads} torch threads, max batch {args.max_batch}, 127.0.0.1")
    print(f"{'mode':14s} {'clients':>7s} {'requests':>8s} {'clips/s':>8s} {'x one-by-one':>12s} {'p50 s':>7s} "
          f"{'p90 s':>7s} {'p99 s':>7s} {'errors':>6s}")
    for r in rows:
        r["ratio_vs_one_by_one"] = r["clips_per_s"] / ref[r["clients"]]["clips_per_s"]
        print(f"{r['mode']:14s} {r['clients']:7d} {r['requests']:8d} {r['clips_per_s']:8.2f} "
              f"{r['ratio_vs_one_by_one']:12.2f} {r['p50_s']:7.2f} {r['p90_s']:7.2f} {r['p99_s']:7.2f} "
              f"{len(r['errors']):6d}")
    if stream:
        print(f"\nstream: {stream['model']}, {stream['seconds']:g} s of audio: first audio after {stream['ttfa_s']:.2f} s, "
              f"whole stream {stream['total_s']:.2f} s ({stream['ttfa_s'] / stream['total_s']:.0%})")
    if args.json:
        sys.path.insert(0, REPO)
        from sonodiff.utils.atomic import atomic_write_json

        atomic_write_json(args.json, {"model": args.model, "threads": args.threads, "max_batch": args.max_batch,
                                      "cpu_count": os.cpu_count(), "rows": rows, "stream": stream})
    return 0


if __name__ == "__main__":
    sys.exit(main())
