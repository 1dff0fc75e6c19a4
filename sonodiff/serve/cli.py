"""`sonodiff serve`: the HTTP service."""

from __future__ import annotations

import sys

__all__ = ["add_parser"]


def _serve(args) -> int:
    import uvicorn

    from sonodiff.serve.app import ServiceConfig, create_app, load_pipelines

    cfg = ServiceConfig(max_duration_s=args.max_duration, timeout_s=args.timeout, max_queue=args.queue_size,
                        max_batch=1 if args.no_batching else args.max_batch, batch_wait_s=args.batch_wait_ms / 1000,
                        workers=args.workers, output_dir=args.output_dir)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    pipes = load_pipelines(args.model, device=args.device)
    app = create_app(pipes, cfg)
    print(f"serving {sorted(pipes)} on http://{args.host}:{args.port} (docs: /docs, schema: /openapi.json)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "gradio": "demo"}


def _guard(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except ModuleNotFoundError as e:
            top = (e.name or "").split(".")[0]
            if top not in EXTRAS:
                raise
            print(f"error: `sonodiff {args.command}` needs {top}: pip install -e \".[{EXTRAS[top]}]\" "
                  f"(or pip install {top})", file=sys.stderr)
            return 2
        except (ValueError, FileNotFoundError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def model_arguments(p, port: int) -> None:
    """The flags `serve` and `demo` share: which models, where to listen, the device and torch threads."""
    p.add_argument("--model", action="append", help="a shipped model name or exported directory (repeat; default: "
                   "every shipped diffusion model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="an HTTP API over the models (generate, stream, models, health)")
    model_arguments(p, port=8000)
    p.add_argument("--workers", type=int, default=1, help="model worker threads sharing the queue (default 1)")
    p.add_argument("--max-batch", type=int, default=8, help="clips per network call across clients (default 8)")
    p.add_argument("--no-batching", action="store_true", help="serve requests one by one (max batch 1)")
    p.add_argument("--batch-wait-ms", type=float, default=20.0, help="how long a batch waits for companions")
    p.add_argument("--queue-size", type=int, default=32, help="waiting clips beyond this get 503 + Retry-After")
    p.add_argument("--timeout", type=float, default=300.0, help="per-request time limit in seconds (504 after)")
    p.add_argument("--max-duration", type=float, default=30.0, help="longest clip a request may ask for (s)")
    p.add_argument("--output-dir", help="also save every generated clip and its sidecar here (default: nothing is "
                   "written to disk)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_guard(_serve))
