"""Supervised pre-training of a timm model on (possibly noisy) labels, CPU-friendly.

Images are decoded and resized once into a uint8 tensor; each epoch draws its order
and its augmentation (random crop with padding, horizontal flip) from a generator
seeded by (seed, epoch), so a run resumed from an epoch checkpoint continues exactly as
an uninterrupted one. A clean validation split (its labels never corrupted) is carved
from the training data before the noise is applied.

Outputs in ``out``: ``model.safetensors`` + ``model.json`` (the model card, which
`featstore extract --weights out/model.safetensors` reads) and, while training,
``checkpoint.safetensors`` (weights, optimizer state and progress in one file, replaced
atomically after each epoch).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from featstore.backbones.card import CARD_FORMAT
from featstore.data.noise import KINDS, RATIO
from featstore.errors import ConfigError, DataError, OtherRunExistsError
from featstore.utils import keys
from featstore.utils.atomic import atomic_write
from featstore.utils.devices import resolve_device
from featstore.utils.validation import (INF, Boolean, Interval, Options, OrNone, Text,
                                        check_all)

# options that determine the weights: a checkpoint made with other values is refused
DETERMINING = ("model", "dataset", "split", "limit", "noise", "noise_kind", "noise_seed", "epochs",
               "batch_size", "lr", "weight_decay", "optimizer", "image_size", "val_fraction",
               "seed", "augment")

_COUNT = Interval(int, 1, INF, "left")
_SEED = Interval(int, 0, INF, "left")
#: The rule of every option but ``model`` (which must name a timm architecture).
RULES = {
    "dataset": Text(paths=True), "split": Text(), "out": Text(paths=True),
    "limit": OrNone(_COUNT), "noise": RATIO, "noise_kind": Options(*KINDS),
    "noise_seed": OrNone(_SEED), "epochs": _COUNT, "batch_size": _COUNT,
    "lr": Interval(float, 0, INF, "neither"), "weight_decay": Interval(float, 0, INF, "left"),
    "optimizer": Options("adamw", "sgd"), "image_size": _COUNT,
    "val_fraction": Interval(float, 0, 1, "neither"), "augment": Boolean(), "seed": _SEED,
    "device": Text(), "num_threads": OrNone(_COUNT),
}


@dataclass
class PretrainConfig:
    model: str = "timm:resnet10t"       # a timm architecture, trained from scratch
    dataset: str = "fashion-mnist"      # built-in name or path (labelled)
    split: str = "train"
    out: str = "pretrained"
    limit: int | None = None            # seeded subset of the split
    noise: float = 0.0                  # label-noise ratio on the training part
    noise_kind: str = "symmetric"
    noise_seed: int | None = None       # default: seed
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 0.05
    optimizer: str = "adamw"            # adamw | sgd (momentum 0.9, nesterov)
    image_size: int = 32
    val_fraction: float = 0.1
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None

    def validate(self) -> None:
        if not isinstance(self.model, str) or not self.model.startswith("timm:"):
            raise ConfigError("pretrain trains timm architectures: --model timm:NAME. "
                              f"Got {self.model!r}.")
        check_all(self, RULES, owner="pretrain")

    def determining(self) -> dict[str, Any]:
        d = asdict(self)
        d["noise_seed"] = self.seed if self.noise_seed is None else self.noise_seed
        return {k: d[k] for k in DETERMINING}


# -- data ----------------------------------------------------------------------------------
def _load_images(cfg: PretrainConfig, mean: tuple, std: tuple) -> dict[str, Any]:
    from PIL import Image

    from featstore.data import load_dataset
    from featstore.data.splits import stratified_split

    samples = load_dataset(cfg.dataset, cfg.split, limit=cfg.limit, seed=cfg.seed)
    if samples.modality != "image":
        raise DataError(f"pretrain needs an image data set; {cfg.dataset} holds {samples.modality}.")
    if samples.labels is None or samples.task != "classification":
        raise DataError(f"pretrain needs class labels; {cfg.dataset}/{cfg.split} has none.")
    y = np.asarray(samples.labels)
    if len(np.unique(y)) < 2:
        raise DataError(f"{cfg.dataset}/{cfg.split} has one class; supervised pre-training needs ≥ 2.")
    size = cfg.image_size
    x = np.empty((len(samples), size, size, 3), np.uint8)
    for i in range(len(samples)):
        img = samples.load(i)
        x[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
    try:
        parts = stratified_split(y, cfg.val_fraction, cfg.seed)
    except DataError as err:
        raise DataError(f"--val-fraction {cfg.val_fraction} of {len(y)} samples: {err}") from None
    train_idx, val_idx = parts["train"], parts["test"]
    if len(val_idx) == 0 or len(train_idx) < 2:
        raise DataError(f"--val-fraction {cfg.val_fraction} of {len(y)} samples leaves "
                        f"{len(val_idx)} for the clean validation split and {len(train_idx)} "
                        "for training; use more samples or a larger --val-fraction.")
    return {"x": torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), "y": y,
            "train": np.sort(train_idx), "val": np.sort(val_idx),
            "classes": samples.classes or [str(c) for c in np.unique(y).tolist()],
            "fingerprint": samples.fingerprint(), "name": samples.name,
            "mean": torch.tensor(mean).view(1, 3, 1, 1), "std": torch.tensor(std).view(1, 3, 1, 1)}


def _normalize(xb: torch.Tensor, data: dict[str, Any]) -> torch.Tensor:
    return (xb.float() / 255 - data["mean"]) / data["std"]


def _augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding of size/8 and a horizontal flip, per sample."""
    n, _, h, w = xb.shape
    pad = max(1, h // 8)
    padded = nn.functional.pad(xb, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(xb)
    for i in range(n):
        crop = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


# -- checkpoint ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Outputs:
    """The files of a run in ``out``: the weights and their card when finished, the
    checkpoint while training."""

    out: Path

    @property
    def weights(self) -> Path:
        return self.out / "model.safetensors"

    @property
    def card(self) -> Path:
        return self.out / "model.json"

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.safetensors"


def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                     state: dict[str, Any]) -> None:
    """Weights, optimizer state and progress in one file, replaced whole (never half a
    checkpoint); a rerun after a kill overwrites the temporary file a kill left."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_sd = opt.state_dict()
    plain: dict[str, dict[str, Any]] = {}
    for pid, st in opt_sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                plain.setdefault(str(pid), {})[k] = v
    meta = {"state": json.dumps(state), "param_groups": json.dumps(opt_sd["param_groups"]),
            "opt_plain": json.dumps(plain)}
    atomic_write(path, save(tensors, metadata=meta), unique=False)


def _load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, extra in json.loads(meta["opt_plain"]).items():
        state.setdefault(int(pid), {}).update(extra)
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["state"])


def _peek_state(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()["state"]


def _mismatch(out: Path, had: dict[str, Any], wanted: dict[str, Any], what: str
              ) -> OtherRunExistsError:
    diff = {k: (had.get(k), wanted.get(k)) for k in sorted(set(had) | set(wanted))
            if had.get(k) != wanted.get(k)}
    shown = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in diff.items())
    return OtherRunExistsError(
        f"{out} holds a {what} with other options ({shown}). Rerun with the same options, "
        "choose another --out, or pass --restart to discard it.")


def _finished(files: Outputs, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The card of a finished run with these options; None if there is none."""
    if not files.card.exists():
        return None
    card = json.loads(files.card.read_text())
    if card.get("options") != wanted:
        raise _mismatch(files.out, card.get("options") or {}, wanted, "finished run")
    return card


def _resume(files: Outputs, model: nn.Module, opt: torch.optim.Optimizer,
            wanted: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """(epochs done, their history) from the checkpoint of an interrupted run, else (0, [])."""
    if not files.checkpoint.exists():
        return 0, []
    state = json.loads(_peek_state(files.checkpoint))
    if state["options"] != wanted:
        raise _mismatch(files.out, state["options"], wanted, "interrupted run")
    state = _load_checkpoint(files.checkpoint, model, opt)
    return state["epoch"], state["history"]


# -- training ------------------------------------------------------------------------------
def _evaluate(model: nn.Module, data: dict[str, Any], idx: np.ndarray, labels: np.ndarray,
              device: torch.device, batch: int = 512) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            out = model(_normalize(data["x"][part], data).to(device))
            correct += int((out.argmax(1).cpu().numpy() == labels[part]).sum())
    return correct / max(1, len(idx))


@dataclass
class _Run:
    """What the epochs of one run share: data, labels, model, optimizer, schedule."""

    cfg: PretrainConfig
    data: dict[str, Any]
    y_idx: np.ndarray          # clean class indices of every sample
    targets: torch.Tensor      # the training labels (noisy where noise was added)
    n_noisy: int
    model: nn.Module
    opt: torch.optim.Optimizer
    device: torch.device
    steps_per_epoch: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def lr_at(self, step: int) -> float:
        """Linear warm-up over the first epoch (at most a tenth of the steps), then cosine
        to 0."""
        cfg = self.cfg
        total = cfg.epochs * self.steps_per_epoch
        warmup = min(self.steps_per_epoch, total // 10)
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _prepare(cfg: PretrainConfig, name: str, noise_seed: int, device: torch.device) -> _Run:
    """Data (with the noise on its training part), a fresh model and its optimizer. The
    order of the seeded draws is part of the result: a resumed run repeats it exactly."""
    import timm

    from featstore.data.noise import add_label_noise

    torch.manual_seed(cfg.seed)
    probe = timm.create_model(name, pretrained=False, num_classes=2)
    dc = timm.data.resolve_model_data_config(probe)
    mean, std = tuple(float(v) for v in dc["mean"]), tuple(float(v) for v in dc["std"])
    data = _load_images(cfg, mean, std)
    y_idx = np.unique(data["y"], return_inverse=True)[1].astype(np.int64)
    train_idx = data["train"]
    y_train = y_idx.copy()
    n_noisy = 0
    if cfg.noise:
        noisy, flipped = add_label_noise(y_idx[train_idx], cfg.noise, cfg.noise_kind,
                                         seed=noise_seed)
        y_train[train_idx] = noisy
        n_noisy = int(flipped.sum())

    torch.manual_seed(cfg.seed)
    model = timm.create_model(name, pretrained=False, num_classes=len(data["classes"])).to(device)
    params = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    opt = (torch.optim.AdamW(params, lr=cfg.lr) if cfg.optimizer == "adamw"
           else torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True))
    steps_per_epoch = len(train_idx) // min(cfg.batch_size, len(train_idx))
    return _Run(cfg, data, y_idx, torch.from_numpy(y_train), n_noisy, model, opt, device,
                steps_per_epoch, mean, std)


def _train_epoch(run: _Run, epoch: int, scaler: Any,
                 on_batch: Callable[[int, int, float], None] | None) -> dict[str, float]:
    """One pass over the training part in the order and augmentation seeded by (seed,
    epoch); returns the epoch's loss and accuracy on the labels it was given."""
    cfg, data, model, opt, device = run.cfg, run.data, run.model, run.opt, run.device
    train_idx = data["train"]
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    order = train_idx[torch.randperm(len(train_idx), generator=gen).numpy()]
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    bs = min(cfg.batch_size, len(train_idx))
    for b in range(run.steps_per_epoch):
        part = order[b * bs:(b + 1) * bs]
        xb = data["x"][part]
        if cfg.augment:
            xb = _augment(xb, gen)
        xb, yb = _normalize(xb, data).to(device), run.targets[part].to(device)
        for g in opt.param_groups:
            g["lr"] = run.lr_at(epoch * run.steps_per_epoch + b)
        with torch.autocast(device.type, enabled=scaler is not None):
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        total_loss += float(loss.detach())
        correct += int((logits.argmax(1) == yb).sum())
        seen += len(part)
        if on_batch:
            on_batch(epoch, b, float(loss.detach()))
    return {"loss": total_loss / run.steps_per_epoch,
            "train_accuracy_given_labels": correct / max(1, seen)}


def _model_card(run: _Run, wanted: dict[str, Any], history: list[dict[str, Any]],
                sd: dict[str, torch.Tensor], seconds: float) -> dict[str, Any]:
    from featstore.backbones import state_dict_sha256

    cfg, data = run.cfg, run.data
    return {
        "format": CARD_FORMAT,
        "architecture": cfg.model,
        "num_classes": len(data["classes"]), "classes": data["classes"],
        "dataset": {"name": data["name"], "spec": cfg.dataset, "split": cfg.split,
                    "fingerprint": data["fingerprint"], "limit": cfg.limit,
                    "n_train": int(len(data["train"])), "n_val_clean": int(len(data["val"]))},
        "noise": {"kind": cfg.noise_kind if cfg.noise else None, "ratio": cfg.noise,
                  "seed": wanted["noise_seed"], "n_noisy": run.n_noisy,
                  "where": "training labels (validation split kept clean)"},
        "epochs": cfg.epochs, "seed": cfg.seed,
        "clean_val_accuracy": history[-1]["clean_val_accuracy"],
        "preprocessing": {"image_size": cfg.image_size, "crop_pct": 1.0, "mean": list(run.mean),
                          "std": list(run.std), "interpolation": "bilinear"},
        "weights_sha256": state_dict_sha256(sd),
        "options": wanted, "history": history,
        "train_seconds": round(seconds, 1),
        "versions": keys.library_versions(), "created_at": keys.now_iso(),
    }


def pretrain(cfg: PretrainConfig, *, restart: bool = False,
             on_batch: Callable[[int, int, float], None] | None = None,
             echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` from scratch; return the model card (also written to
    ``out/model.json``). A finished run with the same options is returned at once; an
    interrupted one resumes from its last epoch checkpoint."""
    from safetensors.torch import save

    from featstore.backbones.timm_backbone import check_model_name

    say = echo or (lambda s: None)
    cfg.validate()
    name = cfg.model.split(":", 1)[1]
    check_model_name(name)
    files = Outputs(Path(cfg.out))
    wanted = cfg.determining()
    if restart:
        for p in (files.weights, files.card, files.checkpoint):
            p.unlink(missing_ok=True)
    card = _finished(files, wanted)
    if card is not None:
        say(f"cached: {files.out} already holds these weights (clean val accuracy "
            f"{card['clean_val_accuracy']:.4f}); --restart retrains")
        return card

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    run = _prepare(cfg, name, wanted["noise_seed"], resolve_device(cfg.device))
    files.out.mkdir(parents=True, exist_ok=True)
    start_epoch, history = _resume(files, run.model, run.opt, wanted)
    if start_epoch:
        say(f"resuming {files.out} after epoch {start_epoch} of {cfg.epochs}")
    scaler = torch.amp.GradScaler("cuda") if run.device.type == "cuda" else None
    t_all = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        stats = _train_epoch(run, epoch, scaler, on_batch)
        val_acc = _evaluate(run.model, run.data, run.data["val"], run.y_idx, run.device)
        history.append({"epoch": epoch + 1, **stats, "clean_val_accuracy": val_acc,
                        "seconds": round(time.perf_counter() - t0, 2)})
        say(f"epoch {epoch + 1}/{cfg.epochs}: loss {stats['loss']:.4f}, clean val accuracy "
            f"{val_acc:.4f} ({history[-1]['seconds']:.0f} s)")
        _save_checkpoint(files.checkpoint, run.model, run.opt,
                         {"epoch": epoch + 1, "history": history, "options": wanted})
    sd = {k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()}
    card = _model_card(run, wanted, history, sd, time.perf_counter() - t_all)
    atomic_write(files.weights, save(sd), unique=False)
    # the card last: weights without a card are an unfinished run
    atomic_write(files.card, json.dumps(card, indent=2), unique=False)
    files.checkpoint.unlink(missing_ok=True)
    return card
