"""`sonodiff demo`: a web page (gradio) to try the models: type a prompt, hear it, see its spectrogram, download
the clip with its provenance sidecar; inpaint or continue an uploaded clip.

Works offline (``GRADIO_ANALYTICS_ENABLED=False`` is set before gradio is imported). Generated files go to a
temporary folder of this process (gradio serves files from disk) and are removed when it exits.
"""

import os
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["Demo", "add_parser", "build_demo"]

EDIT_MODES = ("inpaint", "continue")


class DemoError(ValueError):
    """A bad value on the page: shown to the user, the demo keeps running."""


class Demo:
    """The demo's actions, separate from the page (tested directly): every method returns the paths of what it
    wrote (clip, spectrogram, sidecar) and the sidecar itself."""

    def __init__(self, pipelines: dict, out_dir: str | Path | None = None, max_duration_s: float = 30.0) -> None:
        if not pipelines:
            raise ValueError("the demo needs at least one model")
        self.pipelines = pipelines
        self.max_duration_s = max_duration_s
        self._own_dir = out_dir is None
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="sonodiff-demo-"))
        # one thread does all model work: gradio calls handlers from a pool of threads, and every thread that runs
        # torch keeps its own OpenMP team (more teams than cores throttle them all; see serve.app.load_pipelines)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="sonodiff-demo")

    def close(self) -> None:
        self._worker.shutdown(wait=True)
        if self._own_dir:
            shutil.rmtree(self.out_dir, ignore_errors=True)

    # ------------------------------------------------------------------ checks
    def _pipe(self, model):
        if model not in self.pipelines:
            raise DemoError(f"model: unknown model {model!r}; served: {sorted(self.pipelines)}")
        return self.pipelines[model]

    def _prompt(self, pipe, model, prompt):
        prompt = (prompt or "").strip()
        if not pipe.takes_prompt:
            if prompt:
                raise DemoError(f"prompt: model {model!r} takes no prompt (it is unconditional); leave it empty")
            return None
        if not prompt:
            hint = f"; valid: {', '.join(pipe.labels)}" if pipe.labels else ""
            raise DemoError(f"prompt: model {model!r} needs a prompt{hint}")
        if len(prompt) > 500:
            raise DemoError(f"prompt: {len(prompt)} characters is over the limit of 500")
        if pipe.labels is not None and prompt not in pipe.labels:
            raise DemoError(f"prompt: {prompt!r} is not a label of {model!r}; valid: {', '.join(pipe.labels)}")
        return prompt

    def _settings(self, duration, steps, guidance, seed, sampler) -> dict:
        from sonodiff.core import SAMPLERS

        for name, v, lo, hi in (("duration", duration, 0.05, self.max_duration_s), ("steps", steps, 1, 200),
                                ("guidance", guidance, 0, 30), ("seed", seed, 0, 2**31 - 1)):
            if not lo <= _number(name, v) <= hi:
                raise DemoError(f"{name}: must be between {lo} and {hi}, got {v!r}")
        if sampler not in SAMPLERS:
            raise DemoError(f"sampler: unknown sampler {sampler!r}; valid: {sorted(SAMPLERS)}")
        return {"duration_s": float(duration), "num_steps": int(steps), "guidance_scale": float(guidance),
                "sampler": sampler, "seed": int(seed)}

    # ------------------------------------------------------------------ actions
    def _write(self, pipe, audio, sidecar: dict) -> tuple[str, str, str, dict]:
        from sonodiff.pipelines.cli import write_clip

        wav = self.out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.wav"
        sidecar = write_clip(wav, audio, pipe.sample_rate, sidecar, spectrogram=True)
        return str(wav), str(wav.with_suffix(".png")), str(wav.with_suffix(".json")), sidecar

    def generate(self, model, prompt, duration, steps, guidance, seed, sampler, progress=None):
        """Generate one clip -> (clip path, spectrogram path, sidecar path, sidecar); bad values raise
        :class:`DemoError` naming the field."""
        return self._worker.submit(self._generate, model, prompt, duration, steps, guidance, seed, sampler,
                                   progress).result()

    def edit(self, model, clip, mode, start, end, duration, prompt, steps, guidance, seed, sampler, progress=None):
        """``mode`` "inpaint": regenerate ``[start, end)`` s of the clip; "continue": extend it to ``duration`` s.
        The clip is resampled to the model's rate and mixed to its channels (the sidecar says so)."""
        return self._worker.submit(self._edit, model, clip, mode, start, end, duration, prompt, steps, guidance,
                                   seed, sampler, progress).result()

    def _generate(self, model, prompt, duration, steps, guidance, seed, sampler, progress=None):
        pipe = self._pipe(model)
        p = self._prompt(pipe, model, prompt)
        s = self._settings(duration, steps, guidance, seed, sampler)
        seed = s.pop("seed")
        cb = _progress(progress, s["num_steps"])
        gen = pipe(None if p is None else [p], seeds=[seed], callback=cb, **s)
        side = pipe.provenance(p, seed, model=model, num_steps=s["num_steps"], sampler=s["sampler"],
                               guidance_scale=s["guidance_scale"], duration_s=s["duration_s"], via="sonodiff demo")
        return self._write(pipe, gen.audio[0], side)

    def _edit(self, model, clip, mode, start, end, duration, prompt, steps, guidance, seed, sampler, progress=None):
        from sonodiff.audio.io import load_audio

        pipe = self._pipe(model)
        if mode not in EDIT_MODES:
            raise DemoError(f"mode: one of {list(EDIT_MODES)}, got {mode!r}")
        if not clip:
            raise DemoError("clip: upload a clip to edit")
        try:
            audio, sr = load_audio(clip)
        except Exception as e:  # noqa: BLE001 - anything unreadable is the upload's fault, said as such
            raise DemoError(f"clip: cannot read {Path(clip).name}: {e}") from None
        note = {}
        if sr != pipe.sample_rate:
            from sonodiff.audio.io import resample

            audio, note["input_resampled_from_hz"] = resample(audio, sr, pipe.sample_rate), sr
        if audio.shape[0] != pipe.codec.channels:
            from sonodiff.audio.io import apply_channel_policy

            note["input_channels"] = audio.shape[0]
            audio = apply_channel_policy(audio, "mono" if pipe.codec.channels == 1 else "stereo")
        p = self._prompt(pipe, model, prompt)
        length = audio.shape[-1] / pipe.sample_rate
        if not 0.05 <= length <= self.max_duration_s:
            raise DemoError(f"clip: {Path(clip).name} is {length:.2f} s long; the demo edits clips of 0.05 to "
                            f"{self.max_duration_s:g} s")
        s = self._settings(duration if mode == "continue" else length, steps, guidance, seed, sampler)
        seed = s.pop("seed")
        total = s.pop("duration_s")
        cb = _progress(progress, s["num_steps"])
        rows = None if p is None else [p]
        try:
            if mode == "inpaint":
                start, end = _number("start", start), _number("end", end)
                if not (0 <= start < end <= length):
                    raise DemoError(f"start, end: need 0 <= start < end <= {length:.2f} s (the clip's length), "
                                    f"got {start}, {end}")
                gen = pipe.inpaint(audio, pipe.sample_rate, float(start), float(end), rows, seeds=[seed], callback=cb,
                                   **s)
                extra = {"task": "inpaint", "start_s": float(start), "end_s": float(end)}
            else:
                if total <= length:
                    raise DemoError(f"duration: continue to more than the clip's {length:.2f} s, got {total}")
                gen = pipe.continue_audio(audio, pipe.sample_rate, total, rows, seeds=[seed], callback=cb, **s)
                extra = {"task": "continue", "duration_s": total}
        except ValueError as e:
            if isinstance(e, DemoError):
                raise
            raise DemoError(str(e)) from None
        side = pipe.provenance(p, seed, model=model, input=Path(clip).name, via="sonodiff demo", **s, **extra, **note)
        return self._write(pipe, gen.audio[0], side)


def _number(field: str, v) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise DemoError(f"{field}: give a number, got {v!r}") from None
    if x != x:
        raise DemoError(f"{field}: give a number, got {v!r}")
    return x


def _progress(progress, num_steps: int):
    """A sampler callback reporting the share of the current window's steps (long clips go window by window)."""
    if progress is None:
        return None
    return lambda info: progress((info["i"] + 1) / num_steps, f"window {info['window'] + 1}" if "window" in info
                                 else "sampling")


def _model_info(pipe) -> str:
    if not pipe.takes_prompt:
        return "unconditional: leave the prompt empty"
    if pipe.labels:
        return f"class labels: {', '.join(pipe.labels)}"
    return "a text prompt"


def build_demo(demo: Demo):
    """The gradio Blocks page over ``demo``."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from sonodiff.core import SAMPLERS

    names = list(demo.pipelines)
    first = demo.pipelines[names[0]]

    def defaults(model):
        p = demo.pipelines[model]
        s = p.config["sampling"]
        example = (p.labels[0] if p.labels else "a dog barking") if p.takes_prompt else ""
        return (gr.update(value=example, placeholder=_model_info(p), info=_model_info(p)),
                gr.update(value=p.train_seconds), gr.update(value=s["num_steps"]),
                gr.update(value=s["guidance_scale"]), gr.update(value=s["sampler"]))

    def run_generate(model, prompt, duration, steps, guidance, seed, sampler, progress=gr.Progress()):
        try:
            wav, png, side_path, side = demo.generate(model, prompt, duration, steps, guidance, seed, sampler,
                                                      progress=lambda f, what: progress(f, desc=what))
        except DemoError as e:
            raise gr.Error(str(e)) from None
        return wav, png, [wav, side_path], side

    def run_edit(model, clip, mode, start, end, duration, prompt, steps, guidance, seed, sampler,
                 progress=gr.Progress()):
        try:
            wav, png, side_path, side = demo.edit(model, clip, mode, start, end, duration, prompt, steps, guidance,
                                                  seed, sampler, progress=lambda f, what: progress(f, desc=what))
        except DemoError as e:
            raise gr.Error(str(e)) from None
        return wav, png, [wav, side_path], side

    s0 = first.config["sampling"]
    with gr.Blocks(title="sonodiff demo") as page:
        gr.Markdown("# sonodiff\nGenerate audio with a sonodiff model. Everything runs on this machine.")
        with gr.Row():
            model = gr.Dropdown(names, value=names[0], label="model", elem_id="model")
            seed = gr.Number(0, label="seed", precision=0, minimum=0, elem_id="seed")
        prompt = gr.Textbox((first.labels[0] if first.labels else "a dog barking") if first.takes_prompt else "",
                            label="prompt", info=_model_info(first), elem_id="prompt", max_length=500)
        with gr.Row():
            duration = gr.Slider(0.1, demo.max_duration_s, value=first.train_seconds, step=0.05, label="duration (s)",
                                 elem_id="duration")
            steps = gr.Slider(1, 200, value=s0["num_steps"], step=1, label="steps", elem_id="steps")
            guidance = gr.Slider(0, 30, value=s0["guidance_scale"], step=0.1, label="guidance", elem_id="guidance")
            sampler = gr.Dropdown(sorted(SAMPLERS), value=s0["sampler"], label="sampler", elem_id="sampler")
        with gr.Tabs():
            with gr.Tab("Generate"):
                go = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Tab("Edit a clip"):
                clip = gr.Audio(type="filepath", sources=["upload"], label="clip to edit", elem_id="clip")
                with gr.Row():
                    mode = gr.Radio(list(EDIT_MODES), value="inpaint", label="edit", elem_id="mode")
                    start = gr.Number(0.2, label="inpaint from (s)", minimum=0, elem_id="start")
                    end = gr.Number(0.4, label="inpaint to (s)", minimum=0, elem_id="end")
                edit_go = gr.Button("Edit", variant="primary", elem_id="edit")
        audio = gr.Audio(type="filepath", label="result", interactive=False, elem_id="result")
        spec = gr.Image(type="filepath", label="spectrogram", interactive=False, elem_id="spectrogram")
        files = gr.File(label="download (clip and sidecar)", file_count="multiple", interactive=False,
                        elem_id="files")
        sidecar = gr.JSON(label="provenance", elem_id="provenance")
        model.change(defaults, model, [prompt, duration, steps, guidance, sampler])
        go.click(run_generate, [model, prompt, duration, steps, guidance, seed, sampler], [audio, spec, files, sidecar])
        edit_go.click(run_edit, [model, clip, mode, start, end, duration, prompt, steps, guidance, seed, sampler],
                      [audio, spec, files, sidecar])
    return page


def _demo(args) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio  # noqa: F401 - before loading models: a missing extra is said at once

    from sonodiff.serve.app import load_pipelines

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    demo = Demo(load_pipelines(args.model, device=args.device), max_duration_s=args.max_duration)
    try:
        page = build_demo(demo)
        print(f"demo of {sorted(demo.pipelines)} on http://{args.host}:{args.port}/", flush=True)
        page.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port,
                                                       allowed_paths=[str(demo.out_dir)], quiet=True,
                                                       footer_links=[])
    finally:
        demo.close()
    return 0


def add_parser(sub) -> None:
    from sonodiff.serve.cli import _guard, model_arguments

    p = sub.add_parser("demo", help="a web page to try the models (prompt, play, spectrogram, inpaint/continue)")
    model_arguments(p, port=7860)
    p.add_argument("--max-duration", type=float, default=30.0, help="longest clip the page offers (s)")
    p.set_defaults(func=_guard(_demo))

