"""Speed options of extraction and what they do to the stored values.

Length buckets (texts) and the memory format (images) change at most the last float
bits: same key, recorded in the metadata, within one float16 rounding step of the plain
path. A precision other than float32 changes the values: another key. Resumed runs with
buckets write the bytes of an uninterrupted run.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from featstore.backbones import create_backbone
from featstore.data._base import ArraySampleSet
from featstore.errors import ConfigError
from featstore.extract import ExtractConfig, extract_one
from featstore.extract import chunks, loader
from featstore.extract.pipeline import key_inputs
from featstore.store import Root, open_store

from helpers import assert_user_error, fill_disk_at_chunk, make_images

transformers = pytest.importorskip("transformers")

CPU = torch.device("cpu")
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "fast", "slow"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT with a word-level tokenizer (one token per word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert") / "tiny-bert"
    transformers.BertModel(transformers.BertConfig(
        vocab_size=14, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]",
                                            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", model_max_length=64).save_pretrained(folder)
    return folder


def _texts(n: int, seed: int = 0) -> ArraySampleSet:
    """Texts of 1-40 words in random order (some of equal length: ties)."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 41)))) for _ in range(n)]
    return ArraySampleSet(data=np.array(texts, dtype=object), name="texts", split="train",
                          modality="text", sample_ids=[f"t{i}" for i in range(n)],
                          labels=np.arange(n) % 2, classes=["a", "b"])


def _cfg(root, spec, **kw):
    base = dict(backbones=[spec], datasets=["texts"], root=str(root), chunk_rows=32,
                batch_size=8, num_workers=0, progress=False, dtype="float32")
    return ExtractConfig(**{**base, **kw})


def _within_float16_rounding(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference in units of float16 rounding of the values (1.0 = one
    float16 step of the larger of the two, at that value)."""
    step = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float16)).astype(np.float32)
    return float((np.abs(a - b) / step).max())


def test_text_batches_sorted_by_token_length_inside_each_chunk(tiny_bert):
    bb = create_backbone(f"hf:{tiny_bert}")
    samples = _texts(100)
    lengths = [len(samples.load(i).split()) + 2 for i in range(100)]  # + [CLS], [SEP]
    assert bb.sample_lengths(samples, range(100)) == lengths
    batches = chunks.plan_batches(bb, samples, [0, 1, 2, 3], 100, 32, 8)
    for c, (start, stop) in enumerate([(0, 32), (32, 64), (64, 96), (96, 100)]):
        rows = [i for b in batches for i in b if start <= i < stop]
        # longest first, ties by row id; a chunk's batches hold exactly its rows
        assert rows == sorted(range(start, stop), key=lambda i: (-lengths[i], i))
        assert all(min(b) >= start and max(b) < stop for b in batches if b[0] in rows)
    # A resumed run (chunks 2 and 3 left) batches them as the full run did.
    assert chunks.plan_batches(bb, samples, [2, 3], 100, 32, 8) == batches[-5:]
    # Without buckets, and for images, batches are rows in order.
    plain = chunks.plan_batches(bb, samples, [0], 100, 32, 8, by_length=False)
    assert plain == [list(range(s, s + 8)) for s in range(0, 32, 8)]
    image_bb = create_backbone("timm:test_resnet", pretrained=False, image_size=32)
    assert image_bb.sample_lengths(samples, range(10)) is None


def test_bucketed_text_features_equal_file_order_within_float16_rounding(tmp_path, tiny_bert):
    spec = f"hf:{tiny_bert}"
    bb = create_backbone(spec, pooling="mean")
    samples = _texts(96)
    on = extract_one(bb, samples, _cfg(tmp_path / "on", spec), CPU)
    off = extract_one(bb, samples, _cfg(tmp_path / "off", spec, length_buckets=False), CPU)
    assert on.key == off.key  # same computation, same key
    with open_store(on.path) as a, open_store(off.path) as b:
        fa, fb = a.load_features(), b.load_features()
        assert a.metadata["extraction"]["length_buckets"] is True
        assert b.metadata["extraction"]["length_buckets"] is False
    assert _within_float16_rounding(fa, fb) <= 1.0
    # Rows are placed by id: row i is text i's embedding, computed alone.
    alone = bb.encode([samples.load(5)]).numpy()[0]
    assert _within_float16_rounding(fa[5], alone) <= 1.0


def test_resume_with_buckets_writes_the_bytes_of_an_uninterrupted_run(tmp_path, tiny_bert,
                                                                      monkeypatch):
    """A run stopped at chunk 2 (disk full), then resumed, equals a clean run byte for byte."""
    from featstore.errors import DiskFullError

    spec = f"hf:{tiny_bert}"
    bb = create_backbone(spec)
    clean = extract_one(bb, _texts(160), _cfg(tmp_path / "clean", spec), CPU)
    free_disk = fill_disk_at_chunk(monkeypatch, 2)
    with pytest.raises(DiskFullError):
        extract_one(bb, _texts(160), _cfg(tmp_path / "run", spec), CPU)
    free_disk()
    resumed = extract_one(create_backbone(spec), _texts(160), _cfg(tmp_path / "run", spec), CPU)
    assert resumed.resumed_chunks == 2 and resumed.computed_chunks == 3
    with open_store(resumed.path) as a, open_store(clean.path) as b:
        assert a.load_features().tobytes() == b.load_features().tobytes()
        assert a.verify().ok


@pytest.mark.parametrize("name, channels_last", [("test_resnet", True),
                                                 ("test_efficientnet", True),
                                                 ("test_vit", False)])
def test_memory_format_by_family_within_float16_rounding(tmp_path, name, channels_last):
    bb = create_backbone(f"timm:{name}", pretrained=False, image_size=32)
    assert bb.channels_last is channels_last
    images, labels = make_images(40, size=32)
    samples = ArraySampleSet(data=images, name="tiny", split="train", modality="image",
                             sample_ids=[f"s{i}" for i in range(40)], labels=labels,
                             classes=["a", "b", "c"])
    res = extract_one(bb, samples, _cfg(tmp_path, f"timm:{name}", datasets=["tiny"],
                                        pretrained=False, image_size=32), CPU)
    with open_store(res.path) as fs:
        stored = fs.load_features()
        settings = fs.metadata["extraction"]["backbone_settings"]
    assert settings["memory_format"] == ("channels_last" if channels_last else "contiguous")
    # The plain path: the same weights in the default (contiguous) format.
    x = torch.stack([bb.transform()(samples.load(i)) for i in range(40)])
    plain = bb.model.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        ref = plain.forward_head(plain.forward_features(x), pre_logits=True).numpy()
    assert _within_float16_rounding(stored, ref) <= 1.0


def test_precision_changes_the_key_only_when_not_float32(tmp_path, tiny_bert):
    from featstore.backbones._speed import cpu_has_bfloat16

    spec = f"hf:{tiny_bert}"
    bb = create_backbone(spec)
    samples = _texts(40)
    plain = key_inputs(bb, samples, _cfg(tmp_path, spec))
    assert "precision" not in plain  # float32 keys are those of before the option
    assert key_inputs(bb, samples, _cfg(tmp_path, spec, precision="bfloat16")) == {
        **plain, "precision": "bfloat16"}
    with pytest.raises(ConfigError, match="float16 needs a CUDA device"):
        extract_one(bb, samples, _cfg(tmp_path, spec, precision="float16"), CPU)
    if not cpu_has_bfloat16():
        with pytest.raises(ConfigError, match="bfloat16 needs a CUDA device or a CPU"):
            extract_one(bb, samples, _cfg(tmp_path, spec, precision="bfloat16"), CPU)
        return
    f32 = extract_one(bb, samples, _cfg(tmp_path, spec), CPU)
    bf16 = extract_one(bb, samples, _cfg(tmp_path, spec, precision="bfloat16"), CPU)
    assert f32.key != bf16.key
    with open_store(f32.path) as a, open_store(bf16.path) as b:
        assert b.metadata["extraction"]["backbone_settings"]["precision"] == "bfloat16"
        fa, fb = a.load_features(), b.load_features()
    assert not np.array_equal(fa, fb)
    np.testing.assert_allclose(fb, fa, atol=0.1 * np.abs(fa).max())  # bfloat16: ~3 digits


def test_cli_float16_on_a_cpu_is_a_user_error(tiny_npz, tmp_path, runner):
    from featstore_cli.main import cli

    from helpers import tiny_extract_args

    res = runner.invoke(cli, tiny_extract_args(tiny_npz, tmp_path / "r", "--precision", "float16"))
    assert_user_error(res, "float16 needs a CUDA device", "bfloat16")
    assert not list(Root(tmp_path / "r"))  # refused before a set was created


def test_ahead_raises_at_the_failing_item_and_stops_when_abandoned():
    def prepare(x):
        if x == 3:
            raise ValueError("bad item 3")
        return x * 10

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for item, out in loader.ahead(iter(range(10)), prepare):
            got.append((item, out))
    assert got == [(0, 0), (1, 10), (2, 20)]

    before = threading.active_count()
    stream = loader.ahead(iter(range(1000)), lambda x: x)
    assert next(stream) == (0, 0)
    stream.close()  # the consumer stops early: the thread ends too
    assert threading.active_count() == before


@pytest.mark.slow
def test_compile_is_recorded_and_leaves_values_within_float16_rounding(tmp_path):
    """torch.compile (minutes of compiling on a small CPU, hence slow)."""
    bb = create_backbone("timm:test_resnet", pretrained=False, image_size=32)
    images, labels = make_images(16, size=32)
    samples = ArraySampleSet(data=images, name="tiny", split="train", modality="image",
                             sample_ids=[f"s{i}" for i in range(16)], labels=labels,
                             classes=["a", "b", "c"])
    kw = dict(datasets=["tiny"], pretrained=False, image_size=32, batch_size=16, chunk_rows=16)
    eager = extract_one(bb, samples, _cfg(tmp_path / "e", "timm:test_resnet", **kw), CPU)
    compiled = extract_one(bb, samples, _cfg(tmp_path / "c", "timm:test_resnet", compile=True,
                                             **kw), CPU)
    assert compiled.key == eager.key
    with open_store(eager.path) as a, open_store(compiled.path) as b:
        assert b.metadata["extraction"]["backbone_settings"]["compile"] is True
        assert a.metadata["extraction"]["backbone_settings"]["compile"] is False
        assert _within_float16_rounding(a.load_features(), b.load_features()) <= 1.0


def test_default_workers_by_device_and_cores(monkeypatch):
    from featstore.extract.pipeline import default_workers

    cuda = torch.device("cuda")
    for cpus, on_cpu, on_cuda in [(2, 0, 1), (4, 1, 3), (16, 4, 8), (64, 4, 8)]:
        monkeypatch.setattr("os.cpu_count", lambda cpus=cpus: cpus)
        assert (default_workers(None, CPU), default_workers(None, cuda)) == (on_cpu, on_cuda)
    assert default_workers(3, CPU) == 3  # as asked
