"""`sonodiff serve`: an HTTP API over :class:`~sonodiff.pipelines.Pipeline` (FastAPI on uvicorn).

Endpoints: ``POST /generate`` (JSON in; WAV or FLAC out, provenance in the ``X-Sonodiff-Provenance`` header, or
``multipart/mixed`` with an audio and a JSON part per clip when ``prompt`` is a list), ``GET /generate/stream``
(a WAV whose PCM arrives window by window as it is generated), ``GET /models``, ``GET /health``, the OpenAPI
schema at ``/openapi.json`` and a page listing the endpoints at ``/docs`` (self-contained: no CDN).

Bad requests get a 4xx JSON body ``{"error": ..., "field": ...}``; a full queue 503 with ``Retry-After``; a request
over its time limit 504; a client that disconnects cancels its work. Nothing is written to disk unless the operator
gives ``output_dir``.
"""


import asyncio
import io
import json
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ServiceConfig", "create_app", "encode_audio", "load_pipelines", "wav_header"]


@dataclass
class ServiceConfig:
    """Limits and queue settings of one service (the ``sonodiff serve`` flags)."""

    max_duration_s: float = 30.0
    max_prompt_chars: int = 500
    max_prompts: int = 16
    max_steps: int = 200
    max_guidance: float = 30.0
    timeout_s: float = 300.0
    max_queue: int = 32
    max_batch: int = 8
    batch_wait_s: float = 0.02
    workers: int = 1
    output_dir: str | None = None


def load_pipelines(models: list[str] | None, device: str = "cpu") -> dict:
    """``name -> Pipeline`` for the given shipped names or directories (default: every shipped audio diffusion model).
    A directory is served under its folder name.

    Loading runs on a short-lived thread so that the main thread (the server's event loop) never starts an
    OpenMP team: with a second team alive, libgomp throttles every team's spin-wait once its threads outnumber
    the cores, and the model worker ran 1.9x slower on 2 cores (measured with ``fsdd_digits_mel``)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="sonodiff-load") as ex:
        return ex.submit(_load_pipelines, models, device).result()


def _load_pipelines(models, device) -> dict:
    from sonodiff.models import list_models
    from sonodiff.pipelines import Pipeline

    # the service streams audio: by default every shipped audio model; an image model is refused by name
    names = models or [n for n, m in list_models().items() if m.get("modality", "audio") == "audio"]
    if not names:
        raise FileNotFoundError("no models to serve: pass --model NAME|DIR")
    out = {}
    for m in names:
        key = Path(m).name if Path(m).is_dir() else str(m)
        if key in out:
            raise ValueError(f"two models would be served as {key!r}: rename one directory")
        pipe = Pipeline.from_pretrained(m, device=device)
        if pipe.modality != "audio":
            raise ValueError(f"{m} is an {pipe.modality} model; sonodiff serve and demo serve audio models (generate "
                             f"images with `sonodiff generate PROMPT --model {m} --out x.png`)")
        out[key] = pipe
    return out


def wav_header(num_samples: int, sample_rate: int, channels: int = 1) -> bytes:
    """A 44-byte PCM-16 WAV header for ``num_samples`` frames (known before the audio is: streams send it first)."""
    data = num_samples * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE" + b"fmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16) +
            b"data" + struct.pack("<I", data))


def _pcm16(audio) -> bytes:
    import numpy as np

    # numpy, not torch: the event loop's thread must not start an OpenMP team (see load_pipelines)
    a = np.clip(audio.detach().cpu().numpy().astype(np.float32), -1, 1)  # [C, t]
    return (np.round(a.T * 32767.0).astype("<i2")).tobytes()


def encode_audio(audio, sample_rate: int, fmt: str) -> tuple[bytes, float | None]:
    """``audio [C, T]`` -> (file bytes, the peak it was scaled down from or None). Peaks over 1 are scaled down
    (recorded in the provenance as ``scaled_from_peak``), never clipped."""
    import numpy as np
    import soundfile as sf

    from sonodiff.audio.io import scale_down_peak

    a, scaled = scale_down_peak(audio.detach().cpu().numpy().astype(np.float32))  # numpy: see _pcm16
    buf = io.BytesIO()
    sf.write(buf, a.T, sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue(), scaled


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def create_app(pipelines: dict, config: ServiceConfig | None = None):
    """The FastAPI application serving ``pipelines`` (``name -> Pipeline``); its scheduler is ``app.state.scheduler``
    (closed on shutdown)."""
    from contextlib import asynccontextmanager
    from typing import Literal

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, Response, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from sonodiff import __version__
    from sonodiff.core import SAMPLERS
    from sonodiff.serve.scheduler import Cancelled, DeadlineExceeded, Job, QueueFull, Scheduler, StreamJob

    cfg = config or ServiceConfig()
    if not pipelines:
        raise ValueError("create_app needs at least one model")
    scheduler = Scheduler(pipelines, max_queue=cfg.max_queue, max_batch=cfg.max_batch, batch_wait_s=cfg.batch_wait_s,
                          workers=cfg.workers)
    out_dir = Path(cfg.output_dir) if cfg.output_dir else None
    default = next(iter(pipelines))

    class GenerateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        prompt: str | list[str] | None = Field(None, description="text or class label; a list: one clip each")
        model: str = Field(default, description=f"one of {sorted(pipelines)}")
        duration: float | None = Field(None, gt=0, le=cfg.max_duration_s, description="seconds (default: the model's)")
        steps: int | None = Field(None, ge=1, le=cfg.max_steps)
        guidance: float | None = Field(None, ge=0, le=cfg.max_guidance, description="classifier-free guidance scale")
        seed: int = Field(0, ge=0, lt=2**63)
        sampler: str | None = Field(None, description=f"one of {sorted(SAMPLERS)}")
        format: Literal["wav", "flac"] = "wav"

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.to_thread(scheduler.close)

    app = FastAPI(title="sonodiff", version=__version__, docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Generate audio with sonodiff models. Errors are JSON: {error, field}.")
    app.state.scheduler, app.state.pipelines, app.state.config = scheduler, pipelines, cfg

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        e = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body", "query")]
        if e.get("type") == "json_invalid":
            return _error(400, f"malformed JSON: {e.get('msg')}", "body")
        field = loc[0] if loc else "body"
        given = e.get("input")
        shown = "" if isinstance(given, dict) or given is None else f" (given: {str(given)[:80]!r})"
        return _error(422, f"{field}: {e.get('msg')}{shown}", field)

    def _check(req: GenerateRequest) -> tuple[Any, list]:
        """The pipeline and prompt rows, or raise _Bad (a 4xx naming the field)."""
        pipe = pipelines.get(req.model)
        if pipe is None:
            raise _Bad(404, f"unknown model {req.model!r}; served: {sorted(pipelines)}", "model")
        prompts = req.prompt if isinstance(req.prompt, list) else [req.prompt]
        if isinstance(req.prompt, list) and not 1 <= len(req.prompt) <= cfg.max_prompts:
            raise _Bad(422, f"prompt: give 1 to {cfg.max_prompts} prompts, got {len(req.prompt)}", "prompt")
        for p in prompts:
            if p is None:
                if pipe.takes_prompt:
                    hint = f"; valid labels: {pipe.labels}" if pipe.labels else ""
                    raise _Bad(422, f"prompt: model {req.model!r} needs a prompt{hint}", "prompt")
                continue
            if not pipe.takes_prompt:
                raise _Bad(422, f"prompt: model {req.model!r} takes no prompt (it is unconditional)", "prompt")
            if not p.strip():
                raise _Bad(422, "prompt: must not be empty", "prompt")
            if len(p) > cfg.max_prompt_chars:
                raise _Bad(422, f"prompt: {len(p)} characters is over the limit of {cfg.max_prompt_chars}", "prompt")
            if pipe.labels is not None and p not in pipe.labels:
                raise _Bad(422, f"prompt: {p!r} is not a label of {req.model!r}; valid: {pipe.labels}", "prompt")
        if req.sampler is not None and req.sampler not in SAMPLERS:
            raise _Bad(422, f"sampler: unknown sampler {req.sampler!r}; valid: {sorted(SAMPLERS)}", "sampler")
        if req.duration is not None:
            try:
                pipe._check_duration(req.duration)
            except ValueError as e:
                raise _Bad(422, f"duration: {e}", "duration") from None
        return pipe, prompts

    def _settings(req) -> dict:
        s = {"duration_s": req.duration, "num_steps": req.steps, "guidance_scale": req.guidance, "sampler": req.sampler}
        return {k: v for k, v in s.items() if v is not None}

    def _provenance(pipe, req, prompt, seed, **extra) -> dict:
        return pipe.provenance(prompt, seed, model=req.model, num_steps=req.steps, sampler=req.sampler,
                               guidance_scale=req.guidance,
                               **{"duration_s": req.duration if req.duration is not None else pipe.train_seconds,
                                  **extra})

    def _save(data: bytes, fmt: str, sidecar: dict) -> str | None:
        if out_dir is None:
            return None
        from sonodiff.utils.atomic import atomic_write_bytes

        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.{fmt}"
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_dir / name, data)
        atomic_write_bytes((out_dir / name).with_suffix(".json"), json.dumps(sidecar, indent=2).encode())
        return name

    async def _hangup(request: Request) -> bool:
        """True once the client hangs up. The body has been read, so the next ASGI ``receive`` returns only on
        ``http.disconnect``: waiting on it wakes the handler at once instead of polling."""
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return True
        except Exception:  # noqa: BLE001 - a transport that cannot tell: rely on the time limit
            return False

    async def _wait(request: Request, jobs: list[Job]):
        """Results of ``jobs`` in order; cancels them all if the client disconnects or the time limit passes."""
        futs = [asyncio.wrap_future(j.future) for j in jobs]
        hangup = asyncio.ensure_future(_hangup(request))
        end = time.monotonic() + cfg.timeout_s
        try:
            pending = set(futs)
            while pending:
                left = end - time.monotonic()
                if left <= 0:
                    raise DeadlineExceeded(f"the request took longer than the {cfg.timeout_s:g} s limit")
                watch = pending if hangup.done() else pending | {hangup}
                done, _ = await asyncio.wait(watch, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if hangup in done and hangup.result():
                    raise Cancelled("the client disconnected")
                pending -= done
            return [f.result() for f in futs]
        except BaseException:
            for j in jobs:
                j.cancel()
            raise
        finally:
            hangup.cancel()

    @app.post("/generate", summary="Generate audio (WAV or FLAC; a list of prompts: multipart/mixed)",
              responses={200: {"content": {"audio/wav": {}, "audio/flac": {}, "multipart/mixed": {}}}})
    async def generate(req: GenerateRequest, request: Request):
        try:
            pipe, prompts = _check(req)
        except _Bad as b:
            return _error(b.status, b.message, b.field)
        jobs = []
        try:
            for i, p in enumerate(prompts):
                jobs.append(scheduler.submit(Job(req.model, p, req.seed + i, _settings(req), timeout_s=cfg.timeout_s)))
        except QueueFull as e:
            for j in jobs:
                j.cancel()
            return _error(503, str(e), None, headers={"Retry-After": str(int(e.retry_after_s + 0.999))})
        try:
            results = await _wait(request, jobs)
        except Cancelled as e:
            return _error(499, str(e))
        except DeadlineExceeded as e:
            return _error(504, str(e))
        except Exception as e:  # noqa: BLE001 - the server keeps running; the client learns what failed
            return _error(500, f"generation failed: {type(e).__name__}: {e}")
        parts = []
        for i, (p, (audio, sr)) in enumerate(zip(prompts, results)):
            data, scaled = encode_audio(audio, sr, req.format)
            side = _provenance(pipe, req, p, req.seed + i, **({"scaled_from_peak": scaled} if scaled else {}))
            saved = _save(data, req.format, side)
            if saved:
                side["saved_as"] = saved
            parts.append((data, side))
        media = f"audio/{req.format}"
        if not isinstance(req.prompt, list):
            data, side = parts[0]
            return Response(data, media_type=media, headers={"X-Sonodiff-Provenance": json.dumps(side)})
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for i, (data, side) in enumerate(parts):
            body.write(f"--{boundary}\r\nContent-Type: application/json\r\nContent-Disposition: inline; "
                       f"name=\"provenance_{i}\"\r\n\r\n".encode() + json.dumps(side).encode() + b"\r\n")
            body.write(f"--{boundary}\r\nContent-Type: {media}\r\nContent-Disposition: attachment; name=\"audio_{i}\"; "
                       f"filename=\"clip_{i}.{req.format}\"\r\n\r\n".encode() + data + b"\r\n")
        body.write(f"--{boundary}--\r\n".encode())
        return Response(body.getvalue(), media_type=f"multipart/mixed; boundary={boundary}")

    @app.get("/generate/stream", summary="Stream a WAV: PCM chunks are sent as each window is generated")
    async def generate_stream(request: Request, prompt: str | None = None, model: str = default,
                              duration: float | None = None, steps: int | None = None, guidance: float | None = None,
                              seed: int = 0, sampler: str | None = None):
        try:
            req = GenerateRequest(prompt=prompt, model=model, duration=duration, steps=steps, guidance=guidance,
                                  seed=seed, sampler=sampler)
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None
        try:
            pipe, _ = _check(req)
        except _Bad as b:
            return _error(b.status, b.message, b.field)
        dur = req.duration if req.duration is not None else pipe.train_seconds
        total = round(dur * pipe.sample_rate)
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()

        def on_chunk(chunk, err):  # worker thread -> event loop
            loop.call_soon_threadsafe(chunks.put_nowait, (chunk, err))

        settings = _settings(req)
        settings["duration_s"] = dur
        job = StreamJob(req.model, req.prompt, req.seed, settings, timeout_s=cfg.timeout_s, on_chunk=on_chunk)
        try:
            scheduler.submit(job)
        except QueueFull as e:
            return _error(503, str(e), None, headers={"Retry-After": str(int(e.retry_after_s + 0.999))})

        async def body():
            sent = 0
            try:
                yield wav_header(total, pipe.sample_rate, pipe.codec.channels)
                while True:
                    chunk, err = await chunks.get()
                    if err is not None or chunk is None:
                        break  # on an error the stream ends short: the client sees fewer bytes than the header says
                    data = _pcm16(chunk)
                    sent += chunk.shape[-1]
                    yield data
            finally:
                if sent < total:
                    job.cancel()

        side = _provenance(pipe, req, req.prompt, req.seed, duration_s=dur, streamed=True)
        return StreamingResponse(body(), media_type="audio/wav", headers={"X-Sonodiff-Provenance": json.dumps(side)})

    @app.get("/models", summary="The served models and their settings")
    async def models():
        out = []
        for name, p in pipelines.items():
            s = p.config["sampling"]
            out.append({"name": name, "sample_rate": p.sample_rate, "channels": p.codec.channels,
                        "conditioning": p.model.conditioner.name if p.is_conditional else "none",
                        "takes_prompt": p.takes_prompt, "labels": p.labels, "train_seconds": p.train_seconds,
                        "window_seconds": p.max_window_seconds, "max_duration_s": cfg.max_duration_s,
                        "defaults": {"steps": s.get("num_steps"), "sampler": s.get("sampler"),
                                     "guidance": s.get("guidance_scale")}})
        return out

    @app.get("/health", summary="Liveness, queue length and counters")
    async def health():
        return {"status": "ok", "models": sorted(pipelines), "queue": scheduler.waiting, "busy": scheduler.busy,
                "max_queue": cfg.max_queue, "stats": dict(scheduler.stats), "version": __version__}

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs():
        import html

        rows = []
        for path, ops in app.openapi()["paths"].items():
            for method, op in ops.items():
                rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                            f"<td>{html.escape(op.get('summary', ''))}</td></tr>")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>sonodiff API</title></head><body>"
                f"<h1>sonodiff {__version__} API</h1><p>Schema: <a href='/openapi.json'>/openapi.json</a></p>"
                f"<table border='1' cellpadding='4'><tr><th>method</th><th>path</th><th>what</th></tr>{''.join(rows)}"
                f"</table></body></html>")

    return app


class _Bad(Exception):
    def __init__(self, status: int, message: str, field: str | None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field
