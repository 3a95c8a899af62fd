"""Label noise and caption noise, seeded and exact (docs/noise.md: the kinds of noise).

* ``symmetric``: exactly ``round(r·N)`` samples get a label drawn uniformly from the
  *other* classes, so exactly that many labels are wrong (the paper's definition).
* ``symmetric-all``: ``round(r·N)`` samples get a label re-drawn from *all* classes (the
  authors' downstream code); the expected share of wrong labels is r·(1−1/C).
* ``pairflip``: ``round(r·N_c)`` samples of each class c flip to ``transition[c]``
  (default: the next class, c → c+1 mod C), the usual asymmetric noise.
* ``caption-swap``: ``round(r·N)`` samples (at least 2) exchange captions along a random
  cycle, so each of them ends up with another sample's caption.

Every function returns the new values and a boolean mask of the samples it changed.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from featstore.errors import ConfigError, DataError
from featstore.utils.validation import Interval, Options, check, invalid

KINDS = ("symmetric", "symmetric-all", "pairflip")
ALL_KINDS = KINDS + ("caption-swap",)
#: A noise ratio: the share of samples whose label changes (1 would leave no clean one).
RATIO = Interval(float, 0, 1, "left")


def check_ratio(ratio: Any) -> float:
    return float(check("ratio", ratio, RATIO, noun="parameter"))


def _classes(labels: np.ndarray) -> np.ndarray:
    """The distinct labels in class order: numerically when they are numbers, even as
    strings from a CSV ("2" before "10"), otherwise sorted."""
    classes = np.unique(labels)
    try:
        classes = np.array(sorted(classes.tolist(), key=float), dtype=classes.dtype)
    except (TypeError, ValueError):
        pass
    if len(classes) < 2:
        raise DataError(f"Label noise needs at least 2 classes; the labels have {len(classes)} "
                        f"({classes.tolist()}).")
    return classes


def _draw(labels: Sequence[Any], ratio: float, seed: int, classes: Sequence[Any] | None
          ) -> tuple[np.ndarray, np.ndarray, np.random.Generator, np.ndarray]:
    """Labels, classes, the seeded generator, and the ``round(ratio·N)`` chosen samples."""
    y = np.asarray(labels)
    ratio = check_ratio(ratio)
    cls = np.asarray(classes) if classes is not None else _classes(y)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(y), size=round(ratio * len(y)), replace=False)
    return y, cls, rng, chosen


def symmetric(labels: Sequence[Any], ratio: float, *, seed: int = 0,
              classes: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``round(ratio·N)`` labels replaced by a uniformly drawn *other* class."""
    y, cls, rng, chosen = _draw(labels, ratio, seed, classes)
    index = {c: i for i, c in enumerate(cls.tolist())}
    as_list = y.tolist()  # plain Python values: ints, floats or strings
    noisy = y.copy()
    for i in chosen:
        k = index[as_list[i]]
        j = rng.integers(len(cls) - 1)  # uniform over the C-1 other classes
        noisy[i] = cls[j + (j >= k)]
    return noisy, noisy != y


def symmetric_all(labels: Sequence[Any], ratio: float, *, seed: int = 0,
                  classes: Sequence[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``round(ratio·N)`` labels re-drawn from all classes (the authors' variant)."""
    y, cls, rng, chosen = _draw(labels, ratio, seed, classes)
    noisy = y.copy()
    noisy[chosen] = cls[rng.integers(len(cls), size=len(chosen))]
    return noisy, noisy != y


def pairflip(labels: Sequence[Any], ratio: float, *, seed: int = 0,
             transition: dict[Any, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``round(ratio·N_c)`` samples of each class c in ``transition`` become
    ``transition[c]`` (default: every class to the next one)."""
    y = np.asarray(labels)
    ratio = check_ratio(ratio)
    cls = _classes(y).tolist()
    if transition is None:
        transition = {c: cls[(i + 1) % len(cls)] for i, c in enumerate(cls)}
    named = {str(k) for k in transition} | {str(v) for v in transition.values()}
    unknown = sorted(named - {str(c) for c in cls})
    if unknown:
        raise DataError(f"The transition names classes {unknown} that the labels do not have "
                        f"(classes: {cls[:20]}).")
    by_str = {str(c): c for c in cls}
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    for src, dst in sorted(transition.items(), key=lambda kv: str(kv[0])):
        src, dst = by_str[str(src)], by_str[str(dst)]
        if src == dst:
            raise DataError(f"The transition maps class {src!r} to itself; a flip must change it.")
        members = np.flatnonzero(y == src)
        chosen = rng.choice(members, size=round(ratio * len(members)), replace=False)
        noisy[chosen] = dst
    return noisy, noisy != y


def caption_swap(captions: Sequence[str], ratio: float, *, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``round(ratio·N)`` samples (at least 2 when ratio > 0) pass their captions along a
    random cycle; the mask marks the samples that now carry another sample's caption."""
    caps = np.asarray(list(captions), dtype=object)
    ratio = check_ratio(ratio)
    m = round(ratio * len(caps))
    if 0 < ratio and m < 2:
        m = 2  # one sample cannot swap with itself
    if m > len(caps):
        raise DataError(f"Caption swap needs at least 2 samples; got {len(caps)}.")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(caps))[:m]
    noisy = caps.copy()
    noisy[chosen] = caps[np.roll(chosen, 1)]  # sample chosen[i] takes chosen[i-1]'s caption
    mask = np.zeros(len(caps), bool)
    mask[chosen] = True
    return noisy, mask


def add_label_noise(labels: Sequence[Any], ratio: float, kind: str = "symmetric", *,
                    seed: int = 0, transition: dict[Any, Any] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on ``kind`` (one of :data:`KINDS`)."""
    if kind == "symmetric":
        return symmetric(labels, ratio, seed=seed)
    if kind == "symmetric-all":
        return symmetric_all(labels, ratio, seed=seed)
    if kind == "pairflip":
        return pairflip(labels, ratio, seed=seed, transition=transition)
    raise invalid("kind", kind, Options(*KINDS), noun="parameter")


def parse_transition(text: str | None) -> dict[str, str] | None:
    """``"3:8,7:1"`` -> {"3": "8", "7": "1"}."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        if ":" not in part:
            raise ConfigError(f"--transition takes SRC:DST pairs separated by commas, e.g. "
                              f"'3:8,7:1'. Got {text!r}.")
        a, b = part.split(":", 1)
        out[a.strip()] = b.strip()
    return out
