"""Composition, classifier-free dropout (rates, generator, null path through a real U-Net) and the text cache."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from sonodiff.conditioning import (
    ClassLabelConditioner,
    ClassLabelConfig,
    ComposedConditioner,
    NumberConditioner,
    NumberConfig,
    TimingConditioner,
    TimingConfig,
    encode_cached,
    from_config,
    load_conditioner,
    save_conditioner,
    text_cache_key,
)

TEXTS = ["a dog barking", "piano music", "thunder and rain on the roof"]


def labels(p=0.0, dim=8):
    return ClassLabelConditioner(ClassLabelConfig(num_classes=3, labels=("x", "y", "z"), dim=dim, dropout=p))


# ------------------------------------------------------------------------------ dropout
def test_dropout_rate_generator_and_off_switches():
    c = labels(p=0.3)
    b = c.tokenize(["x", "y", "z", None] * 5000)  # B = 20000
    n = b["labels"].shape[0]
    d1 = c(b, drop=True, generator=torch.Generator().manual_seed(7))
    rate = d1.null.float().mean().item()
    assert abs(rate - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5  # within 4 standard errors
    d2 = c(b, drop=True, generator=torch.Generator().manual_seed(7))
    d3 = c(b, drop=True, generator=torch.Generator().manual_seed(8))
    assert torch.equal(d1.null, d2.null) and not torch.equal(d1.null, d3.null)
    torch.testing.assert_close(d1.pooled, c(b).pooled)  # dropout only marks rows; the network substitutes
    assert c(b).null is None  # drop=False: no dropout
    assert labels(p=0.0)(b, drop=True).null is None
    assert labels(p=1.0)(b, drop=True).null.all()


def test_null_rows_ignore_their_conditioning_in_a_real_unet():
    """The null path end to end: rows marked null give the same network output whatever their text/label."""
    from sonodiff.nn.config import UNetConfig
    from sonodiff.nn.unet import UNet

    comp = ComposedConditioner({"label": labels(dim=8), "timing": TimingConditioner(TimingConfig(max_seconds=30,
                                                                                                 dim=8))})
    torch.manual_seed(0)
    net = UNet(UNetConfig(dims=1, channels=(8, 16), blocks=(1, 1), factors=(2,), attention=(False, True),
                          head_dim=8, groups=4, token_dim=comp.token_dim, pooled_dim=comp.pooled_dim)).eval()
    with torch.no_grad():  # the U-Net zero-initialises its output layer: randomise everything
        for prm in net.parameters():
            prm.normal_(0.0, 0.2)
    x, c_noise = torch.randn(2, 1, 16), torch.zeros(2)

    def run(label, start):
        cond = comp(comp.tokenize({"label": [label, label],
                                   "timing": [{"seconds_start": start, "seconds_total": 20.0}] * 2}))
        with torch.no_grad():
            return net(x, c_noise, cond.with_null(torch.tensor([True, False])))

    a, b = run("x", 0.0), run("z", 9.0)
    torch.testing.assert_close(a[0], b[0])  # null row: identical
    assert (a[1] - b[1]).abs().max() > 1e-4  # conditioned row: depends on the condition


# ------------------------------------------------------------------------------ composition
def test_composition_shapes_projections_and_masks(tiny_text_dirs):
    t5 = from_config({"type": "t5", "path": tiny_text_dirs["t5"]})  # tokens 16, pooled 16
    timing = TimingConditioner(TimingConfig(max_seconds=30.0, dim=8))  # tokens 8, pooled 16
    comp = ComposedConditioner({"text": t5, "timing": timing, "label": labels(dim=8)},
                               how={"text": "tokens", "timing": "both", "label": "pooled"})
    assert comp.token_dim == 16 and comp.pooled_dim == 16 + 8
    assert set(comp.token_proj) == {"timing"} and len(comp.pooled_proj) == 0
    inputs = {"text": TEXTS, "timing": [{"seconds_start": 0.0, "seconds_total": 10.0}] * 3, "label": ["x", None, "z"]}
    b = comp.tokenize(inputs)
    cond = comp(b)
    parts = {"text": t5(b["text"]), "timing": timing(b["timing"])}
    L_text = parts["text"].tokens.shape[1]
    assert cond.tokens.shape == (3, L_text + 2, 16) and cond.pooled.shape == (3, 24)
    assert torch.equal(cond.mask[:, :L_text], parts["text"].mask) and cond.mask[:, L_text:].all()
    torch.testing.assert_close(cond.tokens[:, :L_text], parts["text"].tokens)
    torch.testing.assert_close(cond.tokens[:, L_text:], comp.token_proj["timing"](parts["timing"].tokens))
    torch.testing.assert_close(cond.pooled[:, :16], parts["timing"].pooled)
    # default routes and pooled="sum" with projection to a common width
    s = ComposedConditioner({"text": t5, "n": NumberConditioner(NumberConfig(dim=4))}, pooled="sum")
    assert s.how == {"text": "both", "n": "pooled"} and s.pooled_dim == 16 and s.token_dim == 16
    cs = s(s.tokenize({"text": TEXTS, "n": [0.1, 0.5, 0.9]}))
    want = t5(b["text"]).pooled + s.pooled_proj["n"](s.components["n"](s.components["n"].tokenize([0.1, 0.5, 0.9])).pooled)
    torch.testing.assert_close(cs.pooled, want)
    # a component that only has pooled feeds the token route as one token
    one = ComposedConditioner({"n": NumberConditioner(NumberConfig(dim=4))}, how={"n": "tokens"})
    c1 = one(one.tokenize({"n": [0.2, 0.3]}))
    assert c1.tokens.shape == (2, 1, 4) and c1.pooled is None and c1.mask.all()
    with pytest.raises(ValueError, match="mapping with keys"):
        comp.tokenize({"text": TEXTS})
    with pytest.raises(ValueError, match="must be one of"):
        ComposedConditioner({"n": NumberConditioner()}, how={"n": "global"})
    with pytest.raises(ValueError, match="not components"):
        ComposedConditioner({"n": NumberConditioner()}, how={"m": "pooled"})


def test_composition_attribute_and_cfg_dropout(tiny_text_dirs):
    comp = ComposedConditioner({"label": labels(p=0.5, dim=4), "n": NumberConditioner(NumberConfig(dim=4))},
                               how={"label": "both", "n": "pooled"}, dropout=0.2)
    n = 8000
    b = comp.tokenize({"label": ["x"] * n, "n": [0.5] * n})
    full = comp(b)
    cond = comp(b, drop=True, generator=torch.Generator().manual_seed(3))
    dropped = ~cond.mask[:, 0]  # the label's single token is masked out where the label was dropped
    assert abs(dropped.float().mean().item() - 0.5) < 4 * (0.25 / n) ** 0.5
    assert abs(cond.null.float().mean().item() - 0.2) < 4 * (0.16 / n) ** 0.5
    assert torch.all(cond.pooled[dropped, :4] == 0) and torch.all(cond.tokens[dropped] == 0)
    torch.testing.assert_close(cond.pooled[~dropped], full.pooled[~dropped])
    torch.testing.assert_close(cond.pooled[:, 4:], full.pooled[:, 4:])  # the number is never dropped (p = 0)
    # same draws in the same order with the same seed
    again = comp(b, drop=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.null, cond.null) and torch.equal(again.mask, cond.mask)


def test_composition_config_round_trip(tiny_text_dirs, tmp_path):
    torch.manual_seed(0)
    comp = ComposedConditioner({"text": from_config({"type": "clip_text", "path": tiny_text_dirs["clip_text"]}),
                                "timing": TimingConditioner(TimingConfig(max_seconds=30.0, dim=8))},
                               how={"text": "both", "timing": "both"}, pooled="sum", pooled_dim=12)
    d = json.loads(json.dumps(comp.config.to_dict()))
    assert d["type"] == "composed" and d["conditioners"]["text"]["type"] == "clip_text"
    save_conditioner(comp, tmp_path)
    back = load_conditioner(tmp_path)
    assert back.config == comp.config and back.token_dim == comp.token_dim == 16 and back.pooled_dim == 12
    assert not any(k.startswith("components.text.") for k in comp.weights())  # frozen text: referenced only
    inputs = {"text": TEXTS, "timing": [{"seconds_start": 1.0, "seconds_total": 5.0}] * 3}
    a, c = comp(comp.tokenize(inputs)), back(back.tokenize(inputs))
    torch.testing.assert_close(a.tokens, c.tokens, rtol=0, atol=0)
    torch.testing.assert_close(a.pooled, c.pooled, rtol=0, atol=0)


# ------------------------------------------------------------------------------ text cache
def test_text_cache_key_is_pure_and_sensitive(tiny_text_dirs):
    enc = from_config({"type": "t5", "path": tiny_text_dirs["t5"]})
    k = text_cache_key(enc.config, "a dog barking")
    blob = json.dumps({"conditioner": enc.config.to_dict(), "text": "a dog barking"}, sort_keys=True,
                      ensure_ascii=False)
    assert k == hashlib.sha256(blob.encode()).hexdigest()
    assert k == text_cache_key(from_config(enc.config.to_dict()).config, "a dog barking")
    assert k != text_cache_key(enc.config, "a dog barking ")
    assert k != text_cache_key(from_config({**enc.config.to_dict(), "max_length": 8}).config, "a dog barking")


def test_encode_cached_matches_direct_and_reuses_files(tiny_text_dirs, tmp_path, monkeypatch):
    enc = from_config({"type": "clap_text", "path": tiny_text_dirs["clap_text"]})
    texts = TEXTS + [TEXTS[0]]
    direct = enc.encode_inputs(texts)
    cached = encode_cached(enc, texts, tmp_path)
    assert torch.equal(cached.mask, direct.mask)
    torch.testing.assert_close(cached.tokens, direct.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached.pooled, direct.pooled, atol=1e-5, rtol=1e-5)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 3 and all(f.endswith(".safetensors") and not f.startswith(".") for f in files)

    def boom(*a, **k):
        raise AssertionError("the encoder ran although every text was cached")

    monkeypatch.setattr(type(enc), "forward", boom)
    again = encode_cached(enc, list(reversed(texts)), tmp_path)
    torch.testing.assert_close(again.pooled, cached.pooled.flip(0), rtol=0, atol=0)  # read back bit for bit
    tr = from_config({"type": "t5", "path": tiny_text_dirs["t5"], "trainable": True})
    with pytest.raises(ValueError, match="frozen"):
        encode_cached(tr, texts, tmp_path)


def test_frozen_components_stay_out_of_the_module_tree(tiny_text_dirs):
    """A frozen encoder inside a composition is never trained, averaged or checkpointed (T5's tied weights used to
    break checkpoint saving), yet moves with .to() and is shared, not copied, by an EMA deepcopy."""
    import copy

    t5 = from_config({"type": "t5", "path": tiny_text_dirs["t5"]})
    assert not t5.trainable
    timing = TimingConditioner(TimingConfig(max_seconds=30.0, dim=8))
    comp = ComposedConditioner({"text": t5, "timing": timing})
    assert list(comp.parts) == ["text", "timing"] and set(comp.components) == {"timing"}
    keys = set(comp.state_dict())
    assert keys and not any(k.startswith("components.text") for k in keys)
    assert not any(p is q for p in comp.parameters() for q in t5.parameters())
    twin = copy.deepcopy(comp)
    assert twin.parts["text"] is t5 and twin.parts["timing"] is not timing
    comp.to(torch.float64)
    assert next(t5.parameters()).dtype == torch.float64  # the frozen encoder moved along
    comp.to(torch.float32)
    inputs = {"text": TEXTS, "timing": [{"seconds_start": 0.0, "seconds_total": 10.0}] * 3}
    torch.testing.assert_close(comp(comp.tokenize(inputs)).tokens, twin(twin.tokenize(inputs)).tokens)
    assert set(comp.weights()) == {k for k in keys}  # nothing of the frozen encoder is saved


def test_a_frozen_component_with_its_own_tensors_is_saved_with_the_model():
    """trainable=False on a timing/number conditioner freezes a random table: it must still be in the module tree
    (checkpointed, exported) and round-trip through weights()/load_weights, unlike a pretrained encoder."""
    t_cfg = TimingConfig(max_seconds=30.0, dim=8, trainable=False)
    a = ComposedConditioner({"t": TimingConditioner(t_cfg), "n": NumberConditioner(NumberConfig(dim=4))})
    b = ComposedConditioner({"t": TimingConditioner(t_cfg), "n": NumberConditioner(NumberConfig(dim=4))})
    assert set(a.components) == {"t", "n"} and any(k.startswith("components.t.") for k in a.state_dict())
    b.load_weights(a.weights())
    x = {"t": [{"seconds_start": 1.0, "seconds_total": 9.0}], "n": [0.3]}
    torch.testing.assert_close(a(a.tokenize(x)).pooled, b(b.tokenize(x)).pooled)
