"""Incremental, multi-process, crash-safe feature cache (``sonodiff data prepare``).

Layout of a cache (default ``<dataset>/.sonodiff_cache``)::

    <cache>/<codec>-<key>/          key = hash of codec config + preprocessing + format version
        items/ab/<content-hash>.safetensors   features [C, ...] float32 (+ source info in the metadata)
        bad/ab/<content-hash>.json            verdict for a file that failed the checks
        codec/config.json, stats.safetensors  the codec, fitted on the train split's active frames
        terms.safetensors                     every item's stat terms in one file (fast refits)
        index.json                            key -> path, content hash, size, mtime, caption, ...
        report.json                           counts and every skipped file with its reason
        lock                                  flock held while a prepare runs

Why it is safe to kill at any moment: every file is written to a temporary name in the same folder
and renamed (POSIX rename is atomic), so each file is either absent or complete. That covers killed
processes. The index, codec and terms files are also fsynced; item files are not (fsyncing thousands of
small files halves throughput), so for power-cut durability pass ``durable=True`` (CLI ``--durable``),
which calls ``os.sync()`` before the index is written. Features are
keyed by *content* hash, so a killed run's finished items are found and reused by the next run; the
index is only replaced (atomically) at the end, and orphaned items are deleted only after the new index
is in place. Stale temporary files are removed at the start of a run. A file whose size and mtime match
the index is not re-hashed (``rehash=True`` forces it).
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from sonodiff.audio.codecs import Codec, make_codec
from sonodiff.audio.io import apply_channel_policy, resample
from sonodiff.data.checks import DEFAULT_CHECK, BadAudio, CheckConfig, read_checked
from sonodiff.data.items import Problem
from sonodiff.data.layouts import scan
from sonodiff.utils.atomic import atomic_save_tensors, atomic_write_json

__all__ = ["FORMAT_VERSION", "BadDataError", "PrepareReport", "feature_dir", "file_hash", "prepare"]

FORMAT_VERSION = 2  # 2: statistics on the training split's active frames only
FIT_SPLIT = "train"  # the split codec statistics are fitted on by default
INDEX = "index.json"
# what an index entry records about its file: audio (rate, channels, duration) or image (channels, size)
INFO_KEYS = ("frames", "sample_rate_in", "channels_in", "duration_s", "height", "width")


class BadDataError(RuntimeError):
    """Raised by ``prepare(strict=True)`` when any entry is bad; ``.report`` lists them."""

    def __init__(self, report: PrepareReport) -> None:
        lines = [f"  {p['path']}: {p['reason']} ({p['detail']})" for p in report.bad[:20]]
        more = f"\n  ... and {len(report.bad) - 20} more" if len(report.bad) > 20 else ""
        super().__init__(f"{len(report.bad)} bad entries (strict mode):\n" + "\n".join(lines) + more)
        self.report = report


@dataclass
class PrepareReport:
    """Counts per key: added / changed / unchanged (good items compared with the previous index), removed
    (in the previous index, gone now), skipped (bad entries); ``encoded``: files decoded and analysed
    this run; ``seconds_audio``: duration of the encoded files; ``wall_s``: time of the run."""

    cache_dir: str
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    encoded: int = 0
    total: int = 0
    seconds_audio: float = 0.0
    total_seconds_audio: float = 0.0
    wall_s: float = 0.0
    bad: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"added {self.added}, changed {self.changed}, removed {self.removed}, unchanged {self.unchanged}, "
                f"skipped {self.skipped} (bad); encoded {self.encoded} files ({self.seconds_audio:.1f} s of "
                f"audio) in {self.wall_s:.2f} s; {self.total} items, {self.total_seconds_audio:.1f} s in cache")


def file_hash(path: str | os.PathLike) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _policy(codec: Codec) -> str:
    if codec.modality == "image":
        return f"image, {codec.channels} channel(s)"
    if codec.channels == 1:
        return "mono"
    if codec.channels == 2:
        return "stereo"
    raise ValueError(f"prepare supports codecs with 1 or 2 channels, got {codec.channels}")


def _key_spec(codec: Codec, quality: str, check: CheckConfig) -> dict[str, Any]:
    return {"codec": codec.config_dict(), "resample_quality": quality, "channels": _policy(codec),
            "check": asdict(check), "format_version": FORMAT_VERSION}


def feature_dir(cache_dir: str | os.PathLike, codec: Codec, quality: str = "high",
                check: CheckConfig = DEFAULT_CHECK) -> Path:
    """Folder of one codec configuration inside a cache."""
    spec = json.dumps(_key_spec(codec, quality, check), sort_keys=True).encode()
    return Path(cache_dir) / f"{codec.name}-{hashlib.sha256(spec).hexdigest()[:12]}"


def _write_json(path, obj, indent: int | None = 1) -> None:
    atomic_write_json(path, obj, indent=indent, sort_keys=True)


def _shard(root: str | Path, sub: str, h: str, ext: str) -> str:
    return f"{root}/{sub}/{h[:2]}/{h}{ext}"


# --- worker side -------------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_codec(spec: str) -> Codec:
    """The codec described by ``spec`` (JSON of ``Codec.config_dict()``), built once per process."""
    if _WORKER.get("spec") != spec:
        d = json.loads(spec)
        _WORKER["spec"], _WORKER["codec"] = spec, make_codec(d["codec"], **d["config"])
    return _WORKER["codec"]


def _init_worker() -> None:
    torch.set_num_threads(1)


def _read_input(src: str, codec: Codec, check: CheckConfig, quality: str) -> tuple[torch.Tensor, dict[str, Any]]:
    """The codec's input data ``[C, ...]`` from file ``src`` and what was found in the file (its ``info``)."""
    if codec.modality == "image":
        from sonodiff.audio.image_io import ImageFileError, read_image

        try:
            img = read_image(src, codec.channels, getattr(codec, "size", None))
        except ImageFileError as e:
            raise BadAudio(e.reason, str(e).replace(str(src), Path(src).name)) from None
        return img, {"channels_in": img.shape[0], "height": img.shape[1], "width": img.shape[2]}
    try:
        audio, sr = read_checked(src, check)
    except FileNotFoundError as e:
        raise BadAudio("missing_file", str(e)) from None
    info = {"sample_rate_in": sr, "channels_in": audio.shape[0], "duration_s": audio.shape[1] / sr}
    return resample(apply_channel_policy(audio, _policy(codec)), sr, codec.sample_rate, quality), info


def _encode_one(task: tuple) -> dict[str, Any]:
    """Decode, check and analyse one file; write its features or bad verdict atomically."""
    src, h, fdir, codec_spec, quality, check = task
    fdir = Path(fdir)
    codec = _worker_codec(codec_spec)
    try:
        data, info = _read_input(src, codec, check, quality)
        try:
            feats = codec.analyze(data[None])[0].contiguous()
        except ValueError as e:
            raise BadAudio("too_short", str(e)) from None
        terms = codec.stat_terms(feats)
        meta = {k: json.dumps(v) for k, v in info.items()}
        atomic_save_tensors(_shard(fdir, "items", h, ".safetensors"), {"features": feats.float()}, meta, fsync=False)
        # info and stat terms travel back too, so the driver need not reopen the file
        return {"hash": h, "ok": True, **info, "frames": feats.shape[-1],
                "terms": {k: v.numpy() for k, v in terms.items()}}
    except BadAudio as e:
        verdict = {"reason": e.reason, "detail": e.detail}
    except Exception as e:  # noqa: BLE001 - one bad file never aborts a run: it is reported instead
        verdict = {"reason": "error", "detail": f"{type(e).__name__}: {e}"}
    p = Path(_shard(fdir, "bad", h, ".json"))
    p.parent.mkdir(parents=True, exist_ok=True)
    _write_json(p, verdict)
    return {"hash": h, "ok": False, **verdict}


# --- driver ------------------------------------------------------------------------------------------
def _read_item_info(path: str, codec: Codec) -> dict[str, Any]:
    """Info and stat terms of an item file written by an earlier (possibly killed) run."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
        feats = f.get_tensor("features")
    return {"info": {k: json.loads(v) for k, v in meta.items()}, "terms": codec.stat_terms(feats),
            "frames": feats.shape[-1]}


def _load_terms(fdir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """hash -> stat terms, from ``terms.safetensors`` (empty if absent)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    p = fdir / "terms.safetensors"
    if not p.exists():
        return {}
    with safe_open(str(p), "pt") as f:
        hashes = json.loads(f.metadata()["hashes"])
    mats = load_file(str(p))
    return {h: {k: m[i] for k, m in mats.items()} for i, h in enumerate(hashes)}


def _save_terms(fdir: Path, terms: dict[str, dict[str, torch.Tensor]]) -> None:
    hashes = sorted(terms)
    if not hashes:
        return
    mats = {k: torch.stack([terms[h][k] for h in hashes]) for k in terms[hashes[0]]}
    atomic_save_tensors(fdir / "terms.safetensors", mats, {"hashes": json.dumps(hashes)}, fsync=True)


def _clean_tmp(fdir: Path) -> None:
    for sub in ("items", "bad", "codec", "."):
        d = fdir / sub
        if d.is_dir():
            for p in d.rglob(".*.tmp"):
                p.unlink(missing_ok=True)


def prepare(
    root: str | os.PathLike,
    codec: Codec,
    cache_dir: str | os.PathLike | None = None,
    layout: str = "folder",
    layout_options: dict[str, Any] | None = None,
    workers: int = 2,
    strict: bool = False,
    check: CheckConfig = DEFAULT_CHECK,
    quality: str = "high",
    rehash: bool = False,
    durable: bool = False,
    log: Callable[[str], None] | None = None,
    fit_split: str = FIT_SPLIT,
) -> PrepareReport:
    """Bring the feature cache of dataset ``root`` (read with ``layout``) up to date for ``codec``.

    ``codec``: an audio codec (files are decoded, checked and resampled to its rate) or an image codec (PNG/JPEG
    files of its channels and size: another mode or size is a bad entry naming both); its statistics are (re)fitted on the good
    items of split ``fit_split`` (default ``train``; their active frames: see :meth:`Codec.stat_terms`) and
    saved to ``<feature dir>/codec``; a dataset without that split is fitted on all its items, and the log and
    ``index.json`` (``stats_fitted_on``) say so. Bad entries are skipped and listed in the report;
    with ``strict=True`` they raise :class:`BadDataError` instead (the index is then not updated).
    ``workers``: processes for decoding and analysis (small batches of work run in-process).
    ``durable``: flush every new file to disk before the index (see the module docstring).
    """
    t0 = time.perf_counter()
    root = Path(root)
    layout_options = dict(layout_options or {})
    if codec.modality != "audio":
        from sonodiff.audio.image_io import IMAGE_EXTENSIONS

        if layout != "folder":
            raise ValueError(f"layout {layout!r} is an audio data set layout; a {codec.modality} codec "
                             f"({codec.name!r}) reads folder data sets (layout 'folder')")
        layout_options.setdefault("extensions", IMAGE_EXTENSIONS)
    if not root.is_dir():
        raise ValueError(f"dataset folder {root} does not exist or is not a directory")
    cache_dir = Path(cache_dir) if cache_dir is not None else root / ".sonodiff_cache"
    fdir = feature_dir(cache_dir, codec, quality, check)
    fdir.mkdir(parents=True, exist_ok=True)
    lock = open(fdir / "lock", "w")  # noqa: SIM115 - held (flock) for the whole run, closed in finally
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise RuntimeError(f"another 'prepare' is running on {fdir}; wait for it to finish") from None
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the index is ~10^5 small objects; cyclic GC passes over them cost more than the rest
    try:
        return _prepare_locked(root, codec, fdir, layout, layout_options, workers, strict, check, quality,
                               rehash, durable, log or (lambda s: None), t0, fit_split)
    finally:
        if gc_was_enabled:
            gc.enable()
        lock.close()


def _prepare_locked(root, codec, fdir, layout, layout_options, workers, strict, check, quality, rehash, durable,
                    log, t0, fit_split):
    _clean_tmp(fdir)
    scan_ns = time.time_ns()
    scanned = scan(root, layout, **layout_options)
    try:
        old = json.loads((fdir / INDEX).read_text()) if (fdir / INDEX).exists() else {"items": {}}
    except json.JSONDecodeError as e:
        raise RuntimeError(f"{fdir / INDEX} is not valid JSON ({e}); it is only ever replaced atomically, so "
                           "it was edited by hand: delete it and re-run") from None
    old_items: dict[str, dict] = old.get("items", {})
    old_files = {(e["path"], e["size"], e["mtime_ns"]): e["hash"] for e in old_items.values()}
    old_files.update({(b["path"], b["size"], b["mtime_ns"]): b["hash"] for b in old.get("bad_files", [])})

    # 1. content hashes, skipping files whose size and mtime match the index, unless the file was modified
    #    less than a second before the previous scan (it may have changed again within the same mtime tick;
    #    git calls these "racily clean")
    base = str(root)
    trusted_before = old.get("scanned_at_ns", 0) - 1_000_000_000
    entries = []
    unreadable: list[Problem] = []
    for it in scanned.items:
        src = os.path.join(base, it.path)
        try:
            st = os.stat(src)
            h = None
            if not rehash and st.st_mtime_ns < trusted_before:
                h = old_files.get((it.path, st.st_size, st.st_mtime_ns))
            entries.append((it, h or file_hash(src), st.st_size, st.st_mtime_ns))
        except OSError as e:  # vanished since the scan, or no permission: report, never abort
            unreadable.append(Problem(it.key, it.path, "unreadable", f"{type(e).__name__}: {e.strerror or e}"))

    # 2. decode and analyse every content hash that has neither features nor a bad verdict
    sfdir = str(fdir)
    todo = {}
    for it, h, _, _ in entries:
        if h not in todo and not os.path.exists(_shard(sfdir, "items", h, ".safetensors")) \
                and not os.path.exists(_shard(sfdir, "bad", h, ".json")):
            todo[h] = os.path.join(base, it.path)
    tasks = [(src, h, sfdir, json.dumps(codec.config_dict()), quality, check) for h, src in todo.items()]
    log(f"{len(entries)} files listed, {len(tasks)} to encode with {max(1, workers)} worker(s)")
    results = {}
    if workers > 1 and len(tasks) >= 16 * workers:  # below that, starting processes costs more than it saves
        import multiprocessing as mp

        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as ex:
            chunk = max(1, min(64, len(tasks) // (workers * 8)))
            for r in ex.map(_encode_one, tasks, chunksize=chunk):
                results[r["hash"]] = r
    elif tasks:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # per-file ops are tiny; intra-op threads only add overhead
        try:
            for t in tasks:
                r = _encode_one(t)
                results[r["hash"]] = r
        finally:
            torch.set_num_threads(threads)

    # 3. new index, counts, bad list. Per-item info comes from the old index or, for new content, the
    #    item file; stat terms from terms.safetensors or the item file.
    report = PrepareReport(cache_dir=str(fdir), encoded=len(tasks))
    report.seconds_audio = sum(r.get("duration_s", 0.0) for r in results.values() if r["ok"])
    old_info = {e["hash"]: {k: e[k] for k in INFO_KEYS if k in e} for e in old_items.values()}
    old_terms = _load_terms(fdir)
    new_items: dict[str, dict] = {}
    bad: list[Problem] = list(scanned.problems) + unreadable
    bad_files = []
    terms: dict[str, dict[str, torch.Tensor]] = {}
    info_of: dict[str, dict] = {}
    for it, h, size, mtime in entries:
        if h not in info_of:
            res = results.get(h)
            if res is not None and res["ok"]:
                info_of[h] = {k: res[k] for k in INFO_KEYS if k in res}
                terms[h] = {k: torch.from_numpy(v) for k, v in res["terms"].items()}
            elif h in old_info and h in old_terms and res is None:
                info_of[h], terms[h] = old_info[h], old_terms[h]
            elif os.path.exists(item_path := _shard(sfdir, "items", h, ".safetensors")):
                r = _read_item_info(item_path, codec)
                info_of[h], terms[h] = {**r["info"], "frames": r["frames"]}, r["terms"]
            else:
                info_of[h] = json.loads(Path(_shard(sfdir, "bad", h, ".json")).read_text())
        info = info_of[h]
        if "reason" in info:
            bad.append(Problem(it.key, it.path, info["reason"], info["detail"]))
            bad_files.append({"path": it.path, "size": size, "mtime_ns": mtime, "hash": h})
            continue
        prev = old_items.get(it.key)
        if prev is None:
            report.added += 1
        elif prev["hash"] != h:
            report.changed += 1
        else:
            report.unchanged += 1
        new_items[it.key] = {**it.to_dict(), "hash": h, "size": size, "mtime_ns": mtime, **info}
    bad_keys = {p.key for p in bad}
    report.removed = sum(1 for k in old_items if k not in new_items and k not in bad_keys)
    report.skipped = len(bad)
    report.bad = [p.to_dict() for p in bad]
    report.total = len(new_items)
    report.total_seconds_audio = sum(e.get("duration_s", 0.0) for e in new_items.values())
    report.wall_s = time.perf_counter() - t0
    _write_json(fdir / "report.json", asdict(report))
    if strict and bad:
        raise BadDataError(report)
    if not new_items:
        raise ValueError(f"no usable {codec.modality} in {root} (layout {layout!r}); {len(bad)} bad entries, see "
                         f"{fdir / 'report.json'}")

    # 4. (durable: flush new files,) fit and save the codec, then the index, then delete what the index
    #    no longer references
    if tasks and durable:
        os.sync()
    # statistics from the training split only (valid/test items must not shape the normalisation they are
    # scored in); each content hash counts once, as before
    fit_hashes = list(dict.fromkeys(e["hash"] for e in new_items.values() if e["split"] == fit_split))
    fitted_on = {"split": fit_split, "items": len(fit_hashes)}
    if not fit_hashes:
        splits = sorted({e["split"] for e in new_items.values()})
        fit_hashes = list(dict.fromkeys(e["hash"] for e in new_items.values()))
        fitted_on = {"split": None, "items": len(fit_hashes)}
        log(f"codec statistics: no item of split {fit_split!r} (splits present: {splits}); fitted on all "
            f"{len(fit_hashes)} items instead")
    totals: dict[str, torch.Tensor] = {}
    for h in fit_hashes:
        for k, v in terms[h].items():
            totals[k] = totals[k] + v if k in totals else v.clone()
    fitted = type(codec)(codec.config)
    fitted.fit_terms(totals)
    fitted.save(fdir / "codec")
    _save_terms(fdir, terms)
    _write_json(fdir / INDEX, {"format_version": FORMAT_VERSION, "root": str(root.resolve()),
                               "layout": scanned.layout, "codec": codec.name, "items": new_items,
                               "bad_files": bad_files, "scanned_at_ns": scan_ns, "stats_fitted_on": fitted_on},
                indent=None)
    keep = {e["hash"] for e in new_items.values()} | {b["hash"] for b in bad_files}
    old_keep = {e["hash"] for e in old_items.values()} | {b["hash"] for b in old.get("bad_files", [])}
    if tasks or keep != old_keep:
        for sub in ("items", "bad"):
            for dirpath, _, names in os.walk(fdir / sub):
                for name in names:
                    if name.split(".")[0] not in keep:
                        os.unlink(os.path.join(dirpath, name))
    report.wall_s = time.perf_counter() - t0
    _write_json(fdir / "report.json", asdict(report))
    return report
