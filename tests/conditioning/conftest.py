"""Tiny random transformers checkpoints, saved to a temp dir once per session and loaded back through exactly the
code path a user's real checkpoint takes (``from_pretrained(dir, local_files_only=True)``)."""

from __future__ import annotations

import pytest

WORDS = ["a", "dog", "barking", "in", "the", "distance", "piano", "music", "rain", "on", "roof", "loud", "quiet", "engine", "bird", "song", "birds", "singing", "car", "passing", "by", "soft", "guitar", "people", "talking", "thunder", "wind"]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LEN = 16


def make_tokenizer():
    """A word-level BERT-style tokenizer built offline: [CLS] words [SEP], pad id 0, lower-cased."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(WORDS)))}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=MAX_LEN)


def _save(model, tokenizer, path):
    model.eval().save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_text_dirs(tmp_path_factory):
    """{"clap_text": dir, "clip_text": dir, "t5": dir} with tiny random weights (seeded) and the tokenizer."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    tok = make_tokenizer()
    v = len(tok)
    root = tmp_path_factory.mktemp("tiny_text")
    clap = tf.ClapTextModelWithProjection(tf.ClapTextConfig(
        vocab_size=v, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        projection_dim=12, max_position_embeddings=MAX_LEN + 4, pad_token_id=0, type_vocab_size=1))
    clip = tf.CLIPTextModelWithProjection(tf.CLIPTextConfig(
        vocab_size=v, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=MAX_LEN, projection_dim=12, pad_token_id=0, bos_token_id=2, eos_token_id=3))
    t5 = tf.T5EncoderModel(tf.T5Config(
        vocab_size=v, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, pad_token_id=0,
        decoder_start_token_id=0))
    return {
        "clap_text": _save(clap, tok, root / "clap_text"),
        "clip_text": _save(clip, tok, root / "clip_text"),
        "t5": _save(t5, tok, root / "t5"),
    }


@pytest.fixture(scope="session")
def tiny_clap_audio_dir(tmp_path_factory):
    """A tiny CLAP audio tower at 16 kHz, 1 s max length, 16 mel bins, with its feature extractor."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.ClapAudioConfig(spec_size=64, num_mel_bins=16, patch_size=4, window_size=4, depths=[1, 1],
                             num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32,
                             projection_dim=24, enable_fusion=False)
    fe = tf.ClapFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, max_length_s=1,
                                 fft_window_size=400, frequency_max=8000, truncation="rand_trunc")
    path = tmp_path_factory.mktemp("tiny_clap_audio")
    tf.ClapAudioModelWithProjection(cfg).eval().save_pretrained(path)
    fe.save_pretrained(path)
    return str(path)
