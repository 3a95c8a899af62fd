"""Hugging Face text encoders (BERT, RoBERTa, GPT-2 style): ``hf:PATH``.

A local folder is checked before transformers reads it (its config names a known
architecture, its weights are safetensors or a pickle-free torch file, it has a
tokenizer vocabulary), and is identified by the bytes of those files, never by where
it sits: the same model copied anywhere gives the same content key.
"""

from __future__ import annotations

import importlib.metadata
import json
import pickle
import threading
from pathlib import Path
from typing import Any, Sequence

import torch

from featstore.errors import BackboneError, ConfigError, MissingDependencyError
from featstore.backbones._base import Backbone
from featstore.backbones._speed import ForwardOptions
from featstore.backbones._weights import one_line, files_sha256, state_dict_sha256, torch_load_weights_only

POOLINGS = ("cls", "mean", "last")
#: Tokenizer files whose bytes decide the token ids (hashed with config.json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt")
#: At least one of these (or a *.model / *.tiktoken file) holds the vocabulary itself.
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
#: Weights that load into the encoder but do not shape its hidden states.
UNUSED_PREFIXES = ("pooler.",)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise MissingDependencyError(
            "Text backbones need transformers: pip install 'featstore[text]'."
        ) from err
    transformers.utils.logging.disable_progress_bar()  # featstore shows its own progress
    return transformers


def read_json(path: Path, what: str, kind: type = dict) -> Any:
    """A JSON file of a model folder, or a BackboneError naming it and what was expected."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackboneError(f"{path} is missing: {what} needs it. Copy the complete model "
                            "folder (as save_pretrained() wrote it).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BackboneError(f"{path} is not readable JSON ({one_line(err)}). Restore the "
                            "model folder's copy of it.") from err
    if not isinstance(value, kind):
        raise BackboneError(f"{path} holds a JSON {type(value).__name__}; a JSON "
                            f"{'object' if kind is dict else 'list'} was expected. Restore "
                            "the model folder's copy of it.")
    return value


def check_folder(folder: Path, transformers: Any) -> tuple[list[str], list[str]]:
    """Check a local model folder before loading it; (weight files, config/tokenizer files).

    Weights must be safetensors, or torch files that load with ``weights_only=True``:
    a pickle is checked here, so that its payload never runs and the refusal says what
    to do. The files returned are what the folder's fingerprint hashes.
    """
    config = read_json(folder / "config.json", f"the model folder {folder}")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in transformers.CONFIG_MAPPING:
        raise BackboneError(
            f"{folder / 'config.json'} names the architecture {model_type!r}, which "
            f"transformers {transformers.__version__} does not know. Check that the folder "
            "holds a transformers model, or upgrade transformers.")
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    weights = [f for f in files if f.endswith((".safetensors", ".safetensors.index.json"))]
    for name in weights:
        if name.endswith(".safetensors"):
            _check_safetensors(folder / name)
    if not weights:
        weights = [f for f in files
                   if f.startswith("pytorch_model") and f.endswith((".bin", ".bin.index.json"))]
        for name in weights:
            if name.endswith(".bin"):
                torch_load_weights_only(folder / name)
    if not any(w.endswith((".safetensors", ".bin")) for w in weights):
        raise BackboneError(f"{folder} holds no weights (model.safetensors or pytorch_model.bin). "
                            "Copy the complete folder, as save_pretrained() wrote it.")
    vocab = [f for f in files if f in VOCABULARY_FILES or f.endswith((".model", ".tiktoken"))]
    if not vocab:
        raise BackboneError(f"{folder} has no tokenizer vocabulary ({', '.join(VOCABULARY_FILES)} "
                            "or a sentencepiece .model): save the tokenizer into the folder too "
                            "(tokenizer.save_pretrained(folder)).")
    config_files = ["config.json"] + [f for f in files if f in TOKENIZER_FILES or f in vocab]
    return weights, config_files


def _check_safetensors(path: Path) -> None:
    """Read a safetensors file's header (cheap): a truncated or foreign file is named."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as err:
        raise BackboneError(f"{path} is not a readable safetensors file ({one_line(err)}). It "
                            "may be truncated: copy the model folder again.") from err


class HFTextBackbone(Backbone):
    """A transformers encoder (``AutoModel``) with CLS, masked-mean or last-token pooling.

    Parameters
    ----------
    path : str
        A local model folder (or a hub name, which needs the internet or the hub cache).
    pooling : {"cls", "mean", "last"}
        ``cls``: the first token (BERT/RoBERTa); ``mean``: the mean over real tokens;
        ``last``: the last real token (GPT-2 style decoders).
    max_length : int
        Tokens kept per text (longer texts are truncated).
    normalize : bool
        L2-normalise each embedding (as sentence-transformers' Normalize module does).
    lowercase : bool
        Lower-case texts before tokenizing (sentence-transformers' ``do_lower_case``).
    """

    modality = "text"

    def __init__(self, path: str, *, pooling: str | None = None, max_length: int = 512,
                 normalize: bool = False, layer: int = -1, display_id: str | None = None,
                 lowercase: bool = False):
        transformers = _transformers()
        if not str(path).strip():
            raise ConfigError("hf: needs a model folder, e.g. hf:/models/bert-base (a folder "
                              "saved with save_pretrained()).")
        self.path = str(path)
        folder = Path(self.path)
        local = folder.exists()
        if local and not folder.is_dir():
            raise BackboneError(f"{folder} is a file; hf: needs the model folder (config.json, "
                                "weights and tokenizer files, as save_pretrained() writes them).")
        weight_files, self.config_files = check_folder(folder, transformers) if local else ([], [])
        self.tokenizer, self.model = self._load(transformers, folder if local else self.path)
        self.model.eval().requires_grad_(False)
        decoder = not getattr(self.model.config, "is_encoder_decoder", False) and (
            self.model.config.model_type in ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2"))
        self.pooling = pooling or ("last" if decoder else "cls")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"The 'pooling' option of hf: backbones must be one of "
                              f"{', '.join(POOLINGS)}. Got {self.pooling!r} instead.")
        if self.tokenizer.pad_token is None:  # GPT-2 has none; padding is masked anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_length = min(max_length, getattr(self.tokenizer, "model_max_length", max_length) or max_length)
        self.normalize, self.layer, self.lowercase = normalize, layer, lowercase
        self.num_features = int(self.model.config.hidden_size)
        # The folder's identity: the bytes of its files, wherever it is. A hub name with
        # no local folder falls back to the loaded tensors.
        if local:
            self.weights_sha256 = files_sha256(folder, weight_files)
            self.files_sha256: str | None = files_sha256(folder, self.config_files)
        else:
            self.weights_sha256 = state_dict_sha256(self.model.state_dict())
            self.files_sha256 = None
        self.id = display_id or f"hf:{folder.name or path}"
        self.device = torch.device("cpu")
        self._tokenizer_lock = threading.Lock()
        self._speed = ForwardOptions(self._embed)

    def _load(self, transformers: Any, where: Path | str) -> tuple[Any, Any]:
        """Tokenizer and model, with any failure turned into one BackboneError."""
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(where)
            model, info = transformers.AutoModel.from_pretrained(where, output_loading_info=True)
        except Exception as err:  # transformers raises many types (OSError, ValueError, ...)
            hint = ("" if Path(self.path).exists() else
                    " It is not a local folder; hub downloads need the internet. Pass the path "
                    "of a folder saved with save_pretrained().")
            if isinstance(err, pickle.UnpicklingError):
                hint += (" featstore never unpickles arbitrary objects: convert the weights to "
                         "safetensors.")
            raise BackboneError(f"Cannot load a transformers model from {self.path!r} "
                                f"({type(err).__name__}: {one_line(err, 300)}). Check that "
                                f"config.json, the weights and the tokenizer belong "
                                f"together.{hint}") from err
        missing = sorted(k for k in info.get("missing_keys", ())
                         if not k.startswith(UNUSED_PREFIXES))
        if missing:
            raise BackboneError(
                f"The weights in {self.path} lack {len(missing)} tensors the model needs "
                f"(e.g. {', '.join(missing[:3])}); they would be random. Copy the complete "
                "weights, or check that config.json belongs to them.")
        if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
            raise BackboneError(f"The tokenizer in {self.path} has no vocabulary beyond its "
                                "special tokens: every word would be unknown. Save the "
                                "tokenizer into the folder (tokenizer.save_pretrained).")
        return tokenizer, model

    def provenance(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "architecture": f"hf:{self.model.config.model_type}",
            "weights_sha256": self.weights_sha256,
            "files_sha256": self.files_sha256,  # config and tokenizer files
            "weights_source": str(self.path),   # where: recorded, not part of the key
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "layer": self.layer,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "num_features": self.num_features,
            "preprocessing": {
                "tokenizer": type(self.tokenizer).__name__,
                "vocab_size": len(self.tokenizer),
                "max_length": self.max_length,
                "truncation": True,
                "padding_side": self.tokenizer.padding_side,
                "lowercase": self.lowercase,
            },
            "library": {"transformers": importlib.metadata.version("transformers")},
        }

    def to(self, device: torch.device) -> "HFTextBackbone":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def configure(self, *, precision: str = "float32", compile: bool = False) -> None:
        self._speed.set(precision, compile, self.device, self.id)

    def settings(self) -> dict[str, Any]:
        return {"precision": self._speed.precision, "compile": self._speed.compile}

    def _texts(self, items: Sequence[Any]) -> list[str]:
        return [t.lower() for t in items] if self.lowercase else list(items)

    def _tokenize(self, texts: list[str], **kwargs: Any) -> Any:
        # One call at a time: a fast tokenizer's padding/truncation state is shared, and
        # two threads changing it at once fail ("Already borrowed").
        with self._tokenizer_lock:
            return self.tokenizer(texts, truncation=True, max_length=self.max_length, **kwargs)

    def sample_lengths(self, samples: Any, rows: Sequence[int]) -> list[int]:
        """Token counts (after truncation); an unreadable or non-text sample counts 0
        (the loader records it as invalid)."""
        texts = []
        for i in rows:
            try:
                text = samples.load(i)
            except Exception:  # reported by the loader, with the sample id
                text = ""
            texts.append(text if isinstance(text, str) else "")
        return [len(ids) for ids in self._tokenize(self._texts(texts))["input_ids"]]

    def collate(self, items: Sequence[Any]) -> Any:
        """Tokenize a batch (in the loader's thread, ahead of the forward pass), padded to
        its longest text."""
        tokens = self._tokenize(self._texts(items), padding=True, return_tensors="pt")
        if self.device.type == "cuda":  # pinned: the copy to the GPU does not block
            tokens = {k: v.pin_memory() for k, v in tokens.items()}
        return tokens

    def encode(self, batch: Any) -> torch.Tensor:
        """Features of a :meth:`collate`d batch, or of a list of texts."""
        if isinstance(batch, (list, tuple)):
            batch = self.collate(batch)
        tokens = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        return self._speed.run(self.device, tokens).float().cpu()

    def _embed(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**tokens, output_hidden_states=self.layer != -1)
        hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
        mask = tokens["attention_mask"].to(hidden.dtype)
        if self.pooling == "cls":
            emb = hidden[:, 0]
        elif self.pooling == "mean":
            emb = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        else:  # last real token, whichever side the padding is on
            if self.tokenizer.padding_side == "left":
                emb = hidden[:, -1]
            else:
                last = mask.sum(1).long() - 1
                emb = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        if self.normalize:
            emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        return emb
