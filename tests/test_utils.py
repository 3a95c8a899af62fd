"""featstore.utils: one message shape for bad values, whole-or-nothing writes, and the
errors a caller can catch by their builtin types."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.errors import (AlreadyExistsError, AmbiguousKeyError, ConfigError,
                              FeatstoreError, NotFoundError, OtherRunExistsError,
                              StoreExistsError, StoreNotFoundError, WeightsNotFoundError)
from featstore.utils.atomic import atomic_open, atomic_write, temp_path
from featstore.utils.validation import (INF, AnyOf, Boolean, Interval, ListOf, Options, OrNone,
                                        Text, check, show)


# -- validation ------------------------------------------------------------------------------
def test_the_message_names_option_owner_rule_and_value():
    with pytest.raises(ConfigError) as err:
        check("batch_size", 0, Interval(int, 1, 1 << 16), owner="extract")
    assert str(err.value) == ("The 'batch_size' option of extract must be an int in "
                              "[1, 65536]. Got 0 instead.")
    with pytest.raises(ConfigError, match=r"^The 'lr' parameter of NMTune must be a float in "
                                          r"\(0, inf\)\. Got -1 instead\.$"):
        check("lr", -1, Interval(float, 0, INF, "neither"), owner="NMTune", noun="parameter")
    with pytest.raises(ConfigError, match=r"must be an int in \[1, 1024\] on this service\."):
        check("image_size", 2048, Interval(int, 1, 1024), owner="extract", why=" on this service")


@pytest.mark.parametrize("value", [True, 3.0, np.int64(3), "3", None, float("nan")])
def test_an_int_is_a_python_int(value):
    """Anything else would reach JSON metadata and keys as another type (or crash range())."""
    assert not Interval(int, 0, INF, "left").accepts(value)


def test_intervals_options_and_combinations():
    unit = Interval(float, 0, 1, "left")
    assert unit.accepts(0) and unit.accepts(np.float32(0.5)) and not unit.accepts(1.0)
    assert not unit.accepts(float("nan")) and not unit.accepts(False)
    assert str(unit) == "a float in [0, 1)"
    assert not Interval(float, 0, INF, "neither").accepts(INF)
    kinds = Options("cosine", "linear")
    assert kinds.accepts("linear") and not kinds.accepts("step") and not kinds.accepts([])
    assert str(kinds) == "one of 'cosine', 'linear'"
    assert not Options(0, 1).accepts(False)  # a bool is never taken for 0 or 1
    hidden = OrNone(Interval(int, 1, INF, "left"))
    assert hidden.accepts(None) and hidden.accepts(8)
    assert str(hidden) == "an int in [1, inf) or None"
    cs = ListOf(Interval(float, 0, INF, "neither"))
    assert cs.accepts([0.1, 1]) and cs.accepts(np.array([0.1, 1.0]))
    assert not cs.accepts([]) and not cs.accepts([1, -1]) and not cs.accepts("1")
    assert str(cs) == "a non-empty list of floats in (0, inf)"
    seeds = AnyOf(Interval(int, 1, INF, "left"), ListOf(Interval(int, 0, INF, "left")))
    assert seeds.accepts(3) and seeds.accepts([0, 5]) and not seeds.accepts(0)
    assert Boolean().accepts(False) and not Boolean().accepts(0) and not Boolean().accepts("yes")
    assert Text().accepts("x") and not Text().accepts("  ") and not Text().accepts(None)


def test_values_from_users_are_shown_short():
    assert len(show("x" * 10_000)) < 100 and len(show(list(range(10_000)))) < 100


def test_extract_config_checks_types_for_every_caller():
    """The service builds an ExtractConfig from a JSON request: these reach it as they are."""
    from featstore.extract import ExtractConfig

    good = {"backbones": ["timm:test_resnet"], "datasets": ["mnist-5k"]}
    for name, value, expected in [
            ("pretrained", "yes", "a bool"),
            ("backbones", ["ok", ""], "a non-empty list of non-empty strings"),
            ("weights", 3, "a non-empty string or a path or None"),
            ("image_size", "big", "an int in [1, 8192] or None"),
            ("dataset_options", [], "a mapping"),
            ("codec", 5, "a non-empty string or None")]:
        with pytest.raises(ConfigError, match=f"The '{name}' option of extract must be"
                           ) as err:
            ExtractConfig(**{**good, name: value})
        assert expected in str(err.value) and str(err.value).endswith("instead.")


# -- atomic writes ---------------------------------------------------------------------------
def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "sub" / "card.json"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w", encoding="utf-8") as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["card.json"]  # no temp left
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"


def test_temporary_names():
    """Unique beside the target (concurrent writers), or fixed (a rerun overwrites it)."""
    a, b = temp_path("/x/model.json"), temp_path("/x/model.json")
    assert a != b and a.parent == b.parent and a.name.startswith(".model.json.")
    assert a.name.endswith(".tmp")
    assert temp_path("/x/model.json", unique=False).name == ".model.json.tmp"
    with pytest.raises(ValueError):
        with atomic_open("/x/y", "a"):
            pass


# -- errors ----------------------------------------------------------------------------------
def test_errors_are_caught_by_their_builtin_types():
    assert issubclass(StoreNotFoundError, NotFoundError)
    assert issubclass(NotFoundError, FileNotFoundError)
    assert issubclass(WeightsNotFoundError, FileNotFoundError)
    assert issubclass(StoreExistsError, AlreadyExistsError)
    assert issubclass(AlreadyExistsError, FileExistsError)
    assert issubclass(AmbiguousKeyError, LookupError)
    assert issubclass(OtherRunExistsError, FileExistsError)
    assert issubclass(OtherRunExistsError, ConfigError)  # a bad --out for these options
    for klass in (NotFoundError, AlreadyExistsError, AmbiguousKeyError, OtherRunExistsError):
        assert issubclass(klass, FeatstoreError)
        assert str(klass("one line")) == "one line"  # OSError subclasses: no errno prefix


def test_missing_head_and_results_are_not_found(tmp_path):
    from featstore.workflows.report import read_results
    from featstore.workflows.tuning import load_head

    with pytest.raises(FileNotFoundError, match="No saved head"):
        load_head(str(tmp_path / "nmtune-seed0"))
    with pytest.raises(FileNotFoundError, match="No results file"):
        read_results(tmp_path / "results.jsonl")
