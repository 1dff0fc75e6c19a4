"""`sonodiff resynth IN.wav [--vocoder NAME|DIR] [--model NAME|DIR] [--resample] --out OUT.wav`.

The mel settings come from ``--model``'s codec (and its vocoder unless ``--vocoder`` is given) or from the
``--vocoder`` directory itself; the input is analysed into that log-mel and voiced by the vocoder: what the
codec and vocoder cost a real recording, heard directly.
"""

from __future__ import annotations

import sys
from pathlib import Path


def resynthesize(path: str | Path, vocoder: str | Path | None = None, model: str | Path | None = None,
                 resample: bool = False):
    """(audio ``[C, T]``, sample_rate, vocoder name) of ``path`` analysed to log-mel and voiced again.

    ``model``: a mel model (name or directory) whose codec settings and vocoder are used; ``vocoder``:
    ``griffin_lim``, a shipped vocoder or a vocoder directory (with ``model``: instead of the model's).
    A file at another sample rate is an error unless ``resample``."""
    import torch

    from sonodiff.audio.features import log_mel
    from sonodiff.audio.io import load_audio
    from sonodiff.models.vocoders import load_vocoder, mel_config_of

    if model is None and vocoder is None:
        raise ValueError("give --model (a mel model: its codec and vocoder) or --vocoder (a vocoder directory)")
    codec = None
    if model is not None:
        from sonodiff.audio.codecs import load_codec
        from sonodiff.models import resolve_model

        mdir = resolve_model(model)
        codec = load_codec(mdir / "codec")
        if codec.mel_config is None:
            raise ValueError(f"model {model!r} has a {codec.name!r} codec; resynthesis needs a mel or latent model")
        mel = mel_config_of(codec.mel_config)
        if vocoder is None:
            import json

            vocoder = json.loads((mdir / "config.json").read_text())["audio"].get("vocoder", "griffin_lim")
        voc = load_vocoder(vocoder, expect=mel, base=mdir)
    else:
        if str(vocoder) == "griffin_lim":
            raise ValueError("--vocoder griffin_lim has no mel settings of its own: give --model too")
        voc = load_vocoder(vocoder)
        mel = voc.mel_config
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input {str(p)!r} does not exist")
    try:
        import soundfile as sf

        sr = sf.info(str(p)).samplerate
    except Exception as e:  # noqa: BLE001 - soundfile's errors name no remedy
        raise ValueError(f"cannot read {p} as audio ({e})") from None
    if sr != mel.sample_rate and not resample:
        raise ValueError(f"{p} is at {sr} Hz but the vocoder works at {mel.sample_rate} Hz; pass --resample to "
                         f"resample it")
    audio, sr = load_audio(p, sample_rate=mel.sample_rate)
    if audio.shape[-1] <= mel.n_fft:
        raise ValueError(f"{p} is too short ({audio.shape[-1]} samples at {sr} Hz); need more than {mel.n_fft}")
    with torch.no_grad():
        # a latent model's codec: through its autoencoder too (what the model's own outputs go through)
        if codec is None or codec.name == "mel":
            out = voc(log_mel(audio, mel)[None], length=audio.shape[-1])[0]
        else:
            from sonodiff.pipelines.decode import features_to_audio

            out = features_to_audio(codec, codec.encode(audio[None]), length=audio.shape[-1], vocoder=voc)[0]
    return out, mel.sample_rate, voc.name


def _resynth(args) -> int:
    from sonodiff.audio.io import save_audio

    try:
        audio, sr, name = resynthesize(args.input, args.vocoder, args.model, args.resample)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    peak = float(audio.abs().max())
    subtype = "PCM_16"
    if peak > 1.0:
        if Path(args.out).suffix.lower() != ".wav":
            print(f"error: the resynthesis peaks at {peak:.2f} (> 1); write a .wav (stored as float) instead",
                  file=sys.stderr)
            return 2
        subtype = "FLOAT"
        print(f"note: the resynthesis peaks at {peak:.2f} (> 1): written as float WAV, not clipped")
    try:
        save_audio(args.out, audio, sr, subtype=subtype, sidecar={"input": str(args.input), "vocoder": name,
                                                                  "sample_rate": sr})
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({audio.shape[-1] / sr:.2f} s at {sr} Hz, vocoder {name})")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("resynth", help="analyse a recording to log-mel and voice it again with a vocoder",
                       description="Resynthesise IN with a vocoder: the mel settings come from --model's codec (and "
                                   "its vocoder unless --vocoder is given) or from the --vocoder directory.")
    p.add_argument("input", help="an audio file (WAV, FLAC, ...)")
    p.add_argument("--vocoder", help="griffin_lim, a shipped vocoder (e.g. vocoder_8k) or a vocoder directory")
    p.add_argument("--model", help="a shipped mel model or model directory: its codec settings (and vocoder)")
    p.add_argument("--resample", action="store_true", help="resample input at another rate instead of refusing it")
    p.add_argument("--out", required=True, help="output .wav or .flac (a JSON sidecar is written beside it)")
    p.set_defaults(func=_resynth)
