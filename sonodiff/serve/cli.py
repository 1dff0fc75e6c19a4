"""`sonodiff serve | demo | listen`: the HTTP service, the web demo and the listening test."""

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


def _demo(args) -> int:
    from sonodiff.serve.demo import build_demo

    demo = build_demo(args.model, device=args.device)
    demo.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port, share=False,
                                                   show_error=True, inbrowser=False)
    return 0


def _listen(args) -> int:
    from sonodiff.serve.listen import report, serve_listening_test

    if args.report:
        if args.systems:
            print("give either --report RATINGS.sqlite or system folders, not both", file=sys.stderr)
            return 2
        print(report(args.report, plot=args.plot))
        return 0
    if len(args.systems) < 2 or not args.out:
        print("sonodiff listen needs two or more system folders and --out RATINGS.sqlite", file=sys.stderr)
        return 2
    serve_listening_test(args.systems, args.out, host=args.host, port=args.port, mos=not args.no_mos,
                         max_pairs=args.max_pairs)
    return 0


def _guard(fn):
    def run(args) -> int:
        try:
            return fn(args)
        except (ValueError, FileNotFoundError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    return run


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="an HTTP API over the models (generate, stream, models, health)")
    p.add_argument("--model", action="append", help="a shipped model name or exported directory (repeat; default: "
                   "every shipped diffusion model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="model worker threads sharing the queue (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
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

    p = sub.add_parser("demo", help="a web demo (gradio): prompt, settings, audio, spectrogram, inpaint/continue")
    p.add_argument("--model", action="append", help="shipped name or directory (repeat; default: every shipped model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_guard(_demo))

    p = sub.add_parser("listen", help="a blind listening test (A/B preference and 1-5 MOS) and its report")
    p.add_argument("systems", nargs="*", help="two or more folders of clips, one per system, matched by file name")
    p.add_argument("--out", help="the ratings database (SQLite; reopened to resume)")
    p.add_argument("--report", metavar="RATINGS.sqlite", help="print MOS and pairwise preferences of a ratings file")
    p.add_argument("--plot", help="with --report: also draw the MOS and preference plot to this PNG")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--no-mos", action="store_true", help="A/B preference only (no 1-5 ratings)")
    p.add_argument("--max-pairs", type=int, default=0, help="pairs per rater (default: all)")
    p.set_defaults(func=_guard(_listen))
