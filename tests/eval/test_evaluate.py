"""`sonodiff evaluate` end to end on real files: rows and calibration rows, seeded intervals, paired metrics,
the in-house and a transformers CLAP, and clear errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sonodiff.eval.evaluate import evaluate, load_set

QUIET = lambda *a, **k: None  # noqa: E731
SMALL = {"width": 16, "embed_dim": 32, "n_mels": 32, "batch_size": 32}  # a classifier fast enough for tests


def _tone(f, n=4000, sr=8000, seed=0):
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * f * t) * np.hanning(n) ** 0.3 + 0.003 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """ref/ and real2/: labelled tones (metadata.jsonl); gen/: tones with generate-style JSON sidecars, named as the
    reference clips, slightly distorted; bare/: the same without captions."""
    root = tmp_path_factory.mktemp("evalsets")
    rng = np.random.default_rng(0)
    for name in ("ref", "real2", "gen", "bare"):
        (root / name).mkdir()
    rows = {"ref": [], "real2": []}
    for i in range(40):
        lab = "high" if i % 2 else "low"
        for name in ("ref", "real2"):
            f = float(rng.uniform(900, 1400) if lab == "high" else rng.uniform(200, 500))
            sf.write(root / name / f"c{i:02d}.wav", _tone(f, seed=i), 8000)
            rows[name].append({"path": f"c{i:02d}.wav", "caption": f"a {lab} tone", "label": lab})
        x, _ = sf.read(root / "ref" / f"c{i:02d}.wav", dtype="float32")
        y = np.tanh(2 * x) / 2 + 0.01 * rng.standard_normal(len(x)).astype(np.float32)
        sf.write(root / "gen" / f"c{i:02d}.wav", y, 8000)
        (root / "gen" / f"c{i:02d}.json").write_text(json.dumps({"prompt": f"a {lab} tone", "label": lab, "seed": i}))
        sf.write(root / "bare" / f"c{i:02d}.wav", y, 8000)
    for name in ("ref", "real2"):
        (root / name / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[name]))
    return root


def test_report_rows_calibration_and_seeded_intervals(sets, tmp_path):
    kw = dict(metrics=("frechet", "kad", "accuracy", "pesq", "stoi", "mel", "sisdr"), calibration={"real": str(sets / "real2")},
              resynthesis="fsdd_digits_mel", classifier=tmp_path / "clf", classifier_steps=80, classifier_options=SMALL, bootstrap=30, limit=20,
              log=QUIET)
    rep = evaluate(str(sets / "gen"), str(sets / "ref"), **kw)
    rows = {r["row"]: r for r in rep.rows}
    assert [r["kind"] for r in rep.rows] == ["evaluated", "calibration", "calibration", "calibration"]
    gen, real, resyn, noise = rep.rows
    assert "resynthesised (fsdd_digits_mel, griffin_lim)" in resyn["row"]
    assert resyn["metrics"]["accuracy"]["value"] >= 0.9
    assert "white noise" in noise["row"] and noise["n"] == gen["n"] == 20
    # labels from the sidecars; the classifier (trained on the reference and saved) separates the tones
    assert gen["metrics"]["accuracy"]["value"] >= 0.9 and real["metrics"]["accuracy"]["value"] >= 0.9
    assert noise["metrics"]["accuracy"]["value"] <= 0.7
    assert (tmp_path / "clf" / "config.json").is_file()
    # noise is far from the reference in the embedding; the real set is near
    for m in ("frechet", "kad"):
        assert noise["metrics"][m]["value"] > 3 * real["metrics"][m]["value"]
        lo, hi = gen["metrics"][m]["ci"]
        assert lo <= gen["metrics"][m]["value"] <= hi
    # paired metrics match by file name: the distorted set is close, the noise is not
    assert gen["metrics"]["sisdr"]["value"] > 5 > noise["metrics"]["sisdr"]["value"]
    assert gen["metrics"]["mel"]["value"] < noise["metrics"]["mel"]["value"]
    assert gen["metrics"]["pesq"]["mode"] == "nb"
    # the same inputs give the same numbers (the saved classifier is reused)
    again = evaluate(str(sets / "gen"), str(sets / "ref"), **{**kw, "metrics": ("frechet", "kad", "accuracy"),
                                                               "resynthesis": None})
    for a, b in zip(again.rows, [rep.rows[0], rep.rows[1], rep.rows[3]]):
        assert json.dumps(a["metrics"], sort_keys=True) == json.dumps(
            {k: b["metrics"][k] for k in ("frechet", "kad", "accuracy")}, sort_keys=True)
    md = rep.to_markdown()
    assert "| calibration: real |" in md and "KAD x1000" in md and "no real-vs-real row" not in md
    assert rows and rep.settings["preprocessing"].endswith("loudness none")


def test_set_filters_and_limit(sets):
    s = load_set(f"{sets / 'ref'}@label=high")
    assert len(s) == 20 and set(s.values("label")) == {"high"}
    with pytest.raises(ValueError, match="no clip has a field 'colour'"):
        load_set(f"{sets / 'ref'}@colour=red")
    with pytest.raises(ValueError, match="not key=value"):
        load_set(f"{sets / 'ref'}@label")
    assert len(load_set(str(sets / "ref"), limit=7)) == 7


def test_clap_metric_with_an_in_house_and_a_transformers_clap(sets, tmp_path):
    import transformers as tf

    from sonodiff.eval.clap import ClapConfig, ClapNet, load_clap, save_clap_dir
    from tests.conditioning.conftest import make_tokenizer

    torch.manual_seed(0)
    net = ClapNet(ClapConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16, width=8, embed_dim=16,
                             text_hidden=32))
    save_clap_dir(tmp_path / "clap", config=net.config, state=net.state_dict(), source={"name": "tiny"})
    rep = evaluate(str(sets / "gen"), str(sets / "ref"), metrics=("clap", "frechet"), embedding="clap",
                   clap=str(tmp_path / "clap"), bootstrap=0, log=QUIET)
    for r in rep.rows:
        v = r["metrics"]["clap"]["value"]
        assert -1 <= v <= 1 and r["metrics"]["clap"]["n"] == 40
    assert "frechet" in rep.rows[0]["metrics"]
    # a real (tiny) transformers CLAP saved to a folder works in the same role
    tok = make_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                pad_token_id=0, max_position_embeddings=20, type_vocab_size=1)
    model = tf.ClapModel(tf.ClapConfig(text_config=text, audio_config=dict(
        spec_size=64, num_mel_bins=16, patch_size=4, window_size=4, depths=[1, 1], num_attention_heads=[2, 2],
        patch_embeds_hidden_size=16, hidden_size=32, enable_fusion=False), projection_dim=10)).eval()
    model.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")
    tf.ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1, fft_window_size=400,
                            frequency_max=8000, truncation="rand_trunc").save_pretrained(tmp_path / "hf")
    hf = load_clap(tmp_path / "hf")
    assert hf.sample_rate == 16000
    t = hf.embed_text(["a tone", "a low tone"])
    assert t.shape == (2, 10) and torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)
    rep = evaluate(str(sets / "gen"), str(sets / "ref"), metrics=("clap",), clap=str(tmp_path / "hf"), noise=False,
                   log=QUIET)
    assert rep.settings["clap"].startswith("CLAP (hf)") and len(rep.rows) == 1
    # the same clips in another order give the same per-set score
    assert -1 <= rep.rows[0]["metrics"]["clap"]["value"] <= 1


def test_bad_input_is_a_clear_error(sets, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        evaluate(str(tmp_path / "empty"), str(sets / "ref"), log=QUIET)
    broken = tmp_path / "broken"
    broken.mkdir()
    sf.write(broken / "a.wav", _tone(300), 8000)
    (broken / "b.wav").write_bytes(b"RIFF not audio")
    with pytest.raises(ValueError, match="cannot read .*b.wav"):
        load_set(str(broken))
    with pytest.raises(ValueError, match="metric 'accuracy' needs a 'label'.*c00.wav"):
        evaluate(str(sets / "bare"), str(sets / "ref"), metrics=("accuracy",), classifier_steps=20,
                 classifier_options=SMALL, log=QUIET)
    with pytest.raises(ValueError, match="valid metrics are"):
        evaluate(str(sets / "gen"), str(sets / "ref"), metrics=("fad",), log=QUIET)
    with pytest.raises(ValueError, match="rms:DB"):
        evaluate(str(sets / "gen"), str(sets / "ref"), loudness="loud", log=QUIET)
    other = tmp_path / "other_rate"
    other.mkdir()
    sf.write(other / "c00.wav", _tone(300, n=8000, sr=16000), 16000)
    with pytest.raises(ValueError, match="c00.wav is at 16000 Hz.*8000 Hz"):
        evaluate(str(other), str(sets / "ref"), metrics=("sisdr",), noise=False, log=QUIET)


def test_cli_writes_json_and_markdown(sets, tmp_path):
    from sonodiff.cli import main

    evaluate(str(sets / "gen"), str(sets / "ref"), metrics=("accuracy",), classifier=tmp_path / "clf",
             classifier_steps=100, classifier_options=SMALL, noise=False, log=QUIET)  # the CLI reuses this one
    rc = main(["evaluate", str(sets / "gen"), "--reference", str(sets / "ref"), "--metrics", "frechet,accuracy,mel",
               "--classifier", str(tmp_path / "clf"), "--classifier-steps", "100", "--bootstrap", "20",
               "--json", str(tmp_path / "r.json"), "--report", str(tmp_path / "r.md")])
    assert rc == 0
    d = json.loads((tmp_path / "r.json").read_text())
    assert [r["kind"] for r in d["rows"]] == ["evaluated", "calibration"] and d["settings"]["bootstrap"] == 20
    assert "| row | kind | n | Frechet | accuracy | mel distance |" in (tmp_path / "r.md").read_text()
    assert main(["evaluate", str(tmp_path / "nowhere"), "--reference", str(sets / "ref")]) == 2


def test_a_protocol_manifest_fixes_the_clips_and_their_fields(sets, tmp_path):
    from sonodiff.eval.evaluate import load_protocol

    man = tmp_path / "tones_protocol.jsonl"
    man.write_text("".join(json.dumps({"id": f"c{i:02d}", "captions": [f"tone number {i}", "another"],
                                       "label": "high" if i % 2 else "low"}) + "\n" for i in range(0, 20, 2)))
    proto = load_protocol(man)
    assert proto["name"] == "tones_protocol" and len(proto["clips"]) == 10
    s = load_set(str(sets / "ref"), protocol=proto)
    assert s.paths == [f"c{i:02d}.wav" for i in range(0, 20, 2)]
    assert s.values("caption")[1] == "tone number 2"  # the manifest's fields win over the folder's
    rep = evaluate(str(sets / "gen"), str(sets / "ref"), metrics=("mel",), protocol=man, noise=False, log=QUIET)
    assert rep.rows[0]["n"] == 10 and rep.settings["protocol"] == {"name": "tones_protocol", "clips": 10}
    assert "Protocol: tones_protocol (10 clips)" in rep.to_markdown()
    man.write_text(man.read_text() + json.dumps({"id": "c99", "caption": "not there"}) + "\n")
    with pytest.raises(ValueError, match="1 of the 11 clips of protocol 'tones_protocol' are missing.*c99"):
        load_set(str(sets / "ref"), protocol=load_protocol(man))
    man.write_text('{"id": "c00"}\n{"id": "c00"}\n')
    with pytest.raises(ValueError, match="listed twice"):
        load_protocol(man)
