"""Label and caption noise: exact counts, seeds, the manifest tool and its bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from featstore.errors import ConfigError, DataError
from featstore.data.noise import caption_swap, pairflip, symmetric, symmetric_all
from featstore_cli.main import cli


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.2, 0.33, 0.9])
@pytest.mark.parametrize("seed", [0, 1])
def test_symmetric_flips_exactly_round_rN_to_other_classes(ratio, seed):
    y = np.arange(1001) % 7
    noisy, flipped = symmetric(y, ratio, seed=seed)
    assert flipped.sum() == round(ratio * 1001)  # never "flipped" to the same class
    assert np.array_equal(flipped, noisy != y)
    assert set(np.unique(noisy)) <= set(range(7))
    if ratio >= 0.2:  # the other classes are drawn uniformly
        counts = np.bincount((noisy[flipped] - y[flipped]) % 7, minlength=7)
        assert counts[0] == 0 and counts[1:].min() > 0.5 * counts[1:].mean()


def test_symmetric_all_rate_is_r_times_one_minus_one_over_c():
    y = np.arange(10000) % 10
    rates = [symmetric_all(y, 0.3, seed=s)[1].mean() for s in range(20)]
    assert abs(np.mean(rates) - 0.3 * (1 - 1 / 10)) < 0.005
    assert all(r <= 0.3 for r in rates)


def test_same_seed_same_noise_and_labels_kept_as_given():
    y = np.array(["cat", "dog", "fox"] * 50, dtype=object)
    a, _ = symmetric(y, 0.4, seed=7)
    b, _ = symmetric(y, 0.4, seed=7)
    c, _ = symmetric(y, 0.4, seed=8)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert set(a) <= {"cat", "dog", "fox"}


def test_pairflip_moves_each_class_to_its_target():
    y = np.repeat(np.arange(4), 50)
    noisy, flipped = pairflip(y, 0.2, seed=0)
    for c in range(4):
        assert (flipped & (y == c)).sum() == 10
        assert set(noisy[flipped & (y == c)]) == {(c + 1) % 4}
    noisy, flipped = pairflip(y, 0.5, seed=0, transition={"3": "1"})
    assert flipped.sum() == 25 and set(noisy[flipped]) == {1} and set(y[flipped]) == {3}
    with pytest.raises(DataError, match="classes \\['9'\\]"):
        pairflip(y, 0.5, transition={"9": "1"})


@pytest.mark.parametrize("ratio, expected", [(0.25, 50), (0.005, 2), (0.0, 0)])
def test_caption_swap_gives_exactly_the_fraction_foreign_captions(ratio, expected):
    caps = [f"caption {i}" for i in range(200)]
    noisy, changed = caption_swap(caps, ratio, seed=3)
    foreign = np.array([n != c for n, c in zip(noisy, caps)])
    assert foreign.sum() == expected and np.array_equal(foreign, changed)
    assert sorted(noisy) == sorted(caps)  # captions are exchanged, none invented or lost


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_unit_interval(ratio):
    with pytest.raises(ConfigError, match=r"The 'ratio' parameter must be a float in \[0, 1\)"):
        symmetric([0, 1, 0, 1], ratio)


def _manifest(path, labels, captions=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "caption", "label"] if captions else ["id", "image", "label"])
        for i, lab in enumerate(labels):
            w.writerow([f"s{i}", f"text number {i}" if captions else f"img{i}.png", lab])
    return path


def test_noise_cli_writes_noisy_manifest_and_provenance(runner, tmp_path):
    src = _manifest(tmp_path / "train.csv", [i % 5 for i in range(100)])
    before = src.read_bytes()
    out = tmp_path / "noisy.csv"
    res = runner.invoke(cli, ["noise", str(src), "--ratio", "0.2", "--seed", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "20 of 100 'label' values changed" in res.output
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [f"s{i}" for i in range(100)]
    assert sum(r["is_noisy"] == "1" for r in rows) == 20
    assert all((r["label"] != r["clean_label"]) == (r["is_noisy"] == "1") for r in rows)
    assert src.read_bytes() == before
    prov = json.loads((tmp_path / "noisy.csv.noise.json").read_text())
    assert prov["kind"] == "symmetric" and prov["n_noisy"] == 20 and len(prov["source_sha256"]) == 64
    # the noisy manifest is a data set featstore reads, with the noisy labels
    from featstore.data import load_dataset

    ds = load_dataset(str(out), "train")
    assert ds.labels.tolist() == [int(r["label"]) for r in rows]
    # caption swap on a JSONL copy
    res = runner.invoke(cli, ["noise", str(src), "--ratio", "0.3", "--kind", "caption-swap",
                              "--out", str(tmp_path / "swapped.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    swapped = [json.loads(x) for x in (tmp_path / "swapped.jsonl").read_text().splitlines()]
    assert sum(r["caption"] != r["clean_caption"] for r in swapped) == 30


def test_noise_cli_bad_input_writes_nothing(runner, tmp_path):
    src = _manifest(tmp_path / "train.csv", [i % 3 for i in range(30)])
    one = _manifest(tmp_path / "one.csv", [4] * 30)
    images = _manifest(tmp_path / "images.csv", [i % 3 for i in range(30)], captions=False)
    out = tmp_path / "out.csv"
    cases = [
        (["noise", str(src), "--ratio", "1.2", "--out", str(out)], "must be a float in [0, 1)"),
        (["noise", str(one), "--ratio", "0.2", "--out", str(out)], "at least 2 classes"),
        (["noise", str(images), "--ratio", "0.2", "--kind", "caption-swap", "--out", str(out)],
         "has no caption column"),
        (["noise", str(src), "--ratio", "0.2", "--out", str(src), "--force"], "never overwrites its input"),
        (["noise", str(src), "--ratio", "0.2", "--label-column", "y", "--out", str(out)],
         "has no label column 'y'"),
    ]
    for args, message in cases:
        res = runner.invoke(cli, args)
        assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, res.output
        assert not out.exists()
    out.write_text("keep me")
    res = runner.invoke(cli, ["noise", str(src), "--ratio", "0.2", "--out", str(out)])
    assert res.exit_code == 1 and "--force" in res.output and out.read_text() == "keep me"


def test_noise_touches_only_the_train_split_and_keeps_image_paths(runner, tmp_path):
    src = tmp_path / "data" / "all.csv"
    src.parent.mkdir()
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "split"])
        for i in range(60):
            w.writerow([f"img/{i}.png", i % 3, "train" if i < 40 else "test"])
    out = tmp_path / "elsewhere" / "noisy.csv"
    res = runner.invoke(cli, ["noise", str(src), "--ratio", "0.5", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "20 of 40 'train' rows" in res.output
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert not any(r["is_noisy"] == "1" for r in rows if r["split"] == "test")
    assert sum(r["is_noisy"] == "1" for r in rows) == 20
    # relative paths still name the same files from the new folder
    assert all((out.parent / r["image"]).resolve() == (src.parent / f"img/{i}.png").resolve()
               for i, r in enumerate(rows))
    res = runner.invoke(cli, ["noise", str(src), "--ratio", "0.5", "--split", "val",
                              "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "no rows with split 'val'" in res.output


def test_options_that_do_not_apply_are_refused(runner, tmp_path):
    src = _manifest(tmp_path / "t.csv", [i % 3 for i in range(30)])
    for args, message in [(["--transition", "1:2"], "--transition applies to --kind pairflip"),
                          (["--text-column", "caption"], "--text-column applies to --kind caption-swap")]:
        res = runner.invoke(cli, ["noise", str(src), "--ratio", "0.2", "--out",
                                  str(tmp_path / "o.csv"), *args])
        assert res.exit_code == 1 and message in res.output
    floats = tmp_path / "f.csv"
    floats.write_text("text,label\n" + "".join(f"t{i},{i / 7:.3f}\n" for i in range(20)))
    res = runner.invoke(cli, ["noise", str(floats), "--ratio", "0.2", "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 1 and "regression targets" in res.output
    assert not (tmp_path / "o.csv").exists()


def test_pairflip_orders_numeric_string_labels_as_numbers():
    y = np.array([str(i % 12) for i in range(240)], dtype=object)  # as read from a CSV
    noisy, flipped = pairflip(y, 1 / 2, seed=0)
    pairs = {(a, b) for a, b in zip(y[flipped], noisy[flipped])}
    assert ("1", "2") in pairs and ("9", "10") in pairs and ("11", "0") in pairs
    assert ("1", "10") not in pairs
