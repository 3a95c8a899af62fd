"""The backbone, tuner and data set registries: what a developer registers is what the
CLI, extraction, tuning, the report and the service use, and importing them stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch

from featstore.backbones import (Backbone, backbone_entries, create_backbone, list_backbones,
                                 register_backbone, resolve_backbone, unregister_backbone)
from featstore.data import (ArraySampleSet, SampleSet, fetch_dataset, list_datasets,
                            load_dataset, register_dataset, unregister_dataset)
from featstore.errors import (BackboneError, ConfigError, MissingAssetError, UnknownBackboneError,
                              UnknownDatasetError)
from featstore.tuners import create_tuner, get_tuner, list_tuners, register_tuner, tuner_entries
from featstore.tuners.registry import head_classes, unregister_tuner
from featstore_cli.main import cli

REPO = Path(__file__).resolve().parents[1]


class Constant(Backbone):
    """Text in, a fixed vector per text length out: cheap and deterministic."""

    modality = "text"
    num_features = 3

    def __init__(self, scale: float = 1.0, id: str = "test-constant"):
        self.scale, self.id = scale, id

    def provenance(self) -> dict[str, Any]:
        return {"weights_sha256": f"constant-{self.scale}", "layer": "none", "pooling": "none",
                "preprocessing": "len"}

    def encode(self, batch: Any) -> torch.Tensor:
        n = torch.tensor([float(len(t)) for t in batch])
        return torch.stack([n, n * self.scale, torch.ones_like(n)], dim=1)


def _texts(split: str) -> SampleSet:
    texts = [f"sample {'x' * i}" for i in range(12)]
    return ArraySampleSet(data=np.array(texts, dtype=object), name="test-texts", split=split,
                          modality="text", sample_ids=[f"t{i}" for i in range(12)],
                          labels=np.arange(12) % 2, classes=["a", "b"])


@pytest.fixture
def registered() -> Iterator[None]:
    """A backbone, a scheme, a tuner and a data set registered for one test, then removed."""
    register_backbone("test-constant", modality="text", description="constant test features",
                      options=("scale",), fixed_weights="it has no weights")(Constant)
    register_backbone("echo", modality="text", description="test scheme", argument="TEXT",
                      argument_help="a text", example="echo:hello")(
        lambda text, **options: Constant(id=f"echo:{text}", **options))
    register_tuner("test-fast-lp", description="a linear probe with a fixed learning rate",
                   estimator="featstore.tuners.models:LinearProbe", fixed=("lr",),
                   defaults={"epochs": 30, "batch_size": 64})(
        lambda *, dim, random_state=0, **params: _fast_lp(random_state, **params))
    register_dataset("test-texts", modality="text", splits=("train", "test"),
                     description="twelve test texts")(_texts)
    try:
        yield
    finally:
        unregister_backbone("test-constant")
        unregister_backbone("echo")
        unregister_tuner("test-fast-lp")
        unregister_dataset("test-texts")


def _fast_lp(random_state: int | None, **params: Any) -> Any:
    from featstore.tuners import LinearProbe

    return LinearProbe(lr=0.05, random_state=random_state, **params)


# -- importing a registry never imports torch -----------------------------------------------
def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_the_registries_does_not_import_torch():
    modules = _modules_after("import featstore.backbones, featstore.tuners, featstore.data\n"
                             "featstore.backbones.list_backbones()\n"
                             "featstore.tuners.list_tuners()\n"
                             "featstore.data.list_datasets()")
    assert "torch" not in modules


@pytest.mark.parametrize("args", [["--help"], ["tune", "--help"], ["extract", "--help"],
                                  ["sweep", "--help"], ["backbones"], ["datasets", "list"]])
def test_cli_help_and_listings_do_not_import_torch(args):
    modules = _modules_after("from featstore_cli.main import cli\n"
                             f"try:\n    cli({args!r})\nexcept SystemExit as e:\n"
                             "    assert not e.code, e.code")
    assert "torch" not in modules


# -- listing --------------------------------------------------------------------------------
def test_list_with_fnmatch_patterns_in_registration_order():
    assert list_backbones("*minilm*") == ["all-minilm-l6-v2"]
    assert list_backbones("*MiniLM*") == ["all-minilm-l6-v2"]  # names are case-insensitive
    assert list_backbones("timm*") == ["timm:NAME"]
    assert list_backbones(schemes=False) == ["efficientnet-lite0", "all-minilm-l6-v2"]
    assert list_tuners("nmtune*") == ["nmtune", "nmtune-authors"]
    assert list_tuners(["lp", "mlp"]) == ["lp", "mlp"]
    assert list_tuners(exclude="nmtune*") == ["logreg", "lp", "mlp"]
    assert list_tuners(demo=True) == ["lp", "mlp", "nmtune"]  # the demo's heads
    assert list_datasets("vader-*") == ["vader-tweets", "vader-movies", "vader-amazon",
                                        "vader-nyt"]
    assert list_datasets("no-such-*") == []


def test_registered_entries_are_listed_and_removed(registered):
    assert "test-constant" in list_backbones("test-*")
    assert "echo:TEXT" in list_backbones()
    assert list_tuners()[-1] == "test-fast-lp"  # registered last, listed last
    assert list_datasets("test-*") == ["test-texts"]
    unregister_dataset("test-texts")
    assert list_datasets("test-*") == []
    register_dataset("test-texts", modality="text", splits=("train",), description="again")(_texts)


def test_registering_a_name_twice_warns():
    register_dataset("test-twice", modality="text", splits=("all",), description="one")(_texts)
    try:
        with pytest.warns(UserWarning, match="Overwriting the data set 'test-twice'"):
            register_dataset("test_Twice", modality="text", splits=("all",),
                             description="two")(_texts)
        assert list_datasets("test-twice") == ["test-twice"]
    finally:
        unregister_dataset("test-twice")


def test_a_name_with_a_colon_or_slash_is_refused():
    for bad in ("a:b", "a/b", ""):
        with pytest.raises(ValueError, match="name"):
            register_dataset(bad, modality="text", splits=("all",), description="x")(_texts)


# -- unknown names ----------------------------------------------------------------------------
def test_unknown_names_get_close_matches():
    with pytest.raises(UnknownBackboneError, match="Did you mean efficientnet-lite0"):
        resolve_backbone("efficientnet-lite")
    with pytest.raises(ConfigError, match="Did you mean nmtune"):
        get_tuner("nmtun")
    with pytest.raises(UnknownDatasetError, match="Did you mean mnist-5k"):
        load_dataset("mnist5k")
    with pytest.raises(UnknownDatasetError, match="Did you mean uci-digits"):
        fetch_dataset("uci_digit")


def test_unknown_tuner_lists_the_registry(registered):
    with pytest.raises(ConfigError, match="Known methods: logreg, lp, mlp, nmtune, "
                                          "nmtune-authors, test-fast-lp"):
        create_tuner("ridge", dim=4)


# -- backbones ------------------------------------------------------------------------------
def test_a_registered_backbone_is_created_with_its_option_rules(registered):
    bb = create_backbone("TEST_constant", scale=2.0, image_size=None, seed=0)
    assert isinstance(bb, Constant) and bb.scale == 2.0
    with pytest.raises(ConfigError, match=r"Options \['pooling'\] do not apply to test-constant"):
        create_backbone("test-constant", pooling="cls")
    with pytest.raises(ConfigError, match="--weights does not apply to test-constant: it has no "
                                          "weights"):
        create_backbone("test-constant", weights="w.safetensors")
    echo = create_backbone("echo:hi there", scale=3.0)
    assert echo.id == "echo:hi there" and echo.scale == 3.0
    with pytest.raises(UnknownBackboneError, match="echo: needs a text, e.g. echo:hello"):
        create_backbone("echo:")


def test_a_registered_factory_that_fails_is_one_error_naming_it(registered):
    register_backbone("test-broken", modality="image", description="raises")(
        lambda **options: 1 / 0)
    register_backbone("test-wrong", modality="image", description="returns a string")(
        lambda **options: "not a backbone")
    try:
        with pytest.raises(BackboneError, match="test-broken failed: ZeroDivisionError"):
            create_backbone("test-broken")
        with pytest.raises(UnknownBackboneError, match="returned str"):
            create_backbone("test-wrong")
    finally:
        unregister_backbone("test-broken")
        unregister_backbone("test-wrong")


def test_a_plugin_module_registers_names_the_same_way(tmp_path, monkeypatch):
    (tmp_path / "registry_test_plugin.py").write_text(textwrap.dedent('''
        import torch
        from featstore.backbones import Backbone, register_backbone

        class Net(Backbone):
            id, modality, num_features = "plugin-net", "text", 1

            def __init__(self, scale=1.0):
                self.scale = scale

            def provenance(self):
                return {"weights_sha256": "none", "layer": "", "pooling": "", "preprocessing": ""}

            def encode(self, batch):
                return torch.full((len(batch), 1), self.scale)

        @register_backbone("plugin-net", modality="text", description="from a plugin",
                           options=("scale",))
        def make_net(**options):
            return Net(**options)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        by_name = create_backbone("registry_test_plugin:plugin-net", scale=2.0)
        by_function = create_backbone("registry_test_plugin:make_net", scale=2.0)
        assert by_name.id == by_function.id == "plugin-net"
        assert "plugin-net" in list_backbones()  # registered once the module is imported
        with pytest.raises(ConfigError, match=r"Options \['pooling'\] do not apply"):
            create_backbone("registry_test_plugin:make_net", pooling="mean")
    finally:
        unregister_backbone("plugin-net")
        sys.modules.pop("registry_test_plugin", None)


def test_extract_uses_registered_backbones_and_data_sets(runner, registered, tmp_path):
    res = runner.invoke(cli, ["extract", "--backbone", "test-constant", "--dataset", "test-texts",
                              "--split", "train", "--root", str(tmp_path / "r"), "--json",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    [out] = json.loads(res.output)
    assert out["backbone"] == "test-constant" and out["dataset"] == "test-texts"
    assert out["shape"] == [12, 3]


# -- tuners ---------------------------------------------------------------------------------
def test_tuner_defaults_shown_in_help_are_the_estimators_own():
    for entry in tuner_entries():
        params = create_tuner(entry.name, dim=4).get_params()
        for option, value in entry.defaults.items():
            assert params[option] == value, (entry.name, option)
        assert not set(entry.not_used) & entry.param_names(), entry.name


def test_saved_heads_load_by_the_registry_classes():
    from featstore.tuners import LinearProbe, MLPTuner, NMTune

    assert head_classes() == {"LinearProbe": LinearProbe, "MLPTuner": MLPTuner, "NMTune": NMTune}


def test_a_registered_tuner_runs_through_tune_checks(registered):
    from featstore.workflows.tuning import check_method_options, method_params

    assert "lr" not in method_params("test-fast-lp")  # fixed by its factory
    with pytest.raises(ConfigError, match=r"no parameter\(s\) \['lr'\]"):
        check_method_options("test-fast-lp", {"lr": 0.1})
    X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    est = create_tuner("test-fast-lp", dim=4, random_state=1, epochs=5).fit(X, (X[:, 0] > 0))
    assert est.get_params()["lr"] == 0.05 and est.predict(X).shape == (40,)


def test_report_orders_methods_as_the_registry(registered):
    from featstore.workflows.report import method_rank

    ranks = [method_rank(m) for m in list_tuners()]
    assert ranks == sorted(ranks) and method_rank("retired-method") == len(list_tuners())


# -- the CLI, the sweep and the service read the registries --------------------------------
def test_cli_choices_are_the_registry_names(runner):
    from featstore_cli.commands.tune import tune

    method = next(p for p in tune.params if p.name == "method")
    assert list(method.type.choices) == list_tuners()
    res = runner.invoke(cli, ["backbones", "--json"])
    assert [r["name"] for r in json.loads(res.output)] == list_backbones() + ["module:function"]
    res = runner.invoke(cli, ["datasets", "list", "--json"])
    assert [r["name"] for r in json.loads(res.output)] == list_datasets()
    from featstore_cli.commands.extract import extract

    helps = {p.name: p.help for p in extract.params}
    assert all(name in helps["datasets"] for name in list_datasets())
    assert all(name in helps["backbones"] for name in list_backbones())


def test_listings_show_registered_entries(runner, registered):
    res = runner.invoke(cli, ["backbones", "test-*"])
    assert "test-constant" in res.output and "constant test features" in res.output
    res = runner.invoke(cli, ["datasets", "list", "test-*", "--json"])
    assert json.loads(res.output) == [{"name": "test-texts", "modality": "text",
                                       "splits": ["train", "test"],
                                       "description": "twelve test texts", "installed": True}]
    with pytest.raises(MissingAssetError, match="not fetched by featstore"):
        fetch_dataset("test-texts")


def test_sweep_methods_are_checked_against_the_registry(tmp_path, registered):
    from featstore.workflows.sweep import load_sweep

    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"results: {tmp_path / 'r.jsonl'}\njobs: [{{train: a, test: b}}]\n"
                   "methods: [lp, ridge]\n")
    with pytest.raises(ConfigError, match="expected one of logreg, lp, mlp, nmtune, "
                                          "nmtune-authors, test-fast-lp"):
        load_sweep(cfg)


def test_the_service_resolves_specs_with_the_registries(tmp_path, registered):
    from featstore.workflows.service.requests import expand

    [job] = expand({"backbone": "Test_Constant", "dataset": "TEST_TEXTS"}, str(tmp_path / "r"))
    assert (job.backbone, job.dataset) == ("test-constant", "test-texts")
    with pytest.raises(ConfigError, match="Did you mean efficientnet-lite0"):
        expand({"backbone": "efficientnet-lite", "dataset": "mnist-5k"}, str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="echo: needs a text"):
        expand({"backbone": "echo:", "dataset": "mnist-5k"}, str(tmp_path / "r"))
    assert [e.name for e in backbone_entries() if e.local_folder] == ["hf", "st"]
