"""The contract every store backend keeps, as a base class of tests (like zarr's
``zarr.testing.store.StoreTests``).

A backend's test class subclasses :class:`StoreConformance`, names the backend class
and implements :meth:`StoreConformance.poke`, a write that bypasses featstore (the
format's own library), so that the tests can damage a set the way a disk, a person or
a foreign tool would::

    class TestZarrStore(StoreConformance):
        backend = ZarrStore

        def poke(self, path, array, index, value):
            zarr.open_array(str(path / array), mode="r+")[index] = value

tests/test_store_conformance.py runs it for Zarr and HDF5; a third backend subclasses
it the same way. The tests speak only of what the rest of featstore relies on:
creating, writing and committing chunks, completeness, checked reads and `verify`,
resume after a crash, repair, metadata, and the class methods that tell roots,
extraction, copy and pack about the files (:class:`featstore.store.formats.StoreFormat`).
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featstore.errors import (ReadOnlyStoreError, StoreCorruptError, StoreIncompleteError,
                              StoreNotFoundError)
from featstore.store import (FeatureStore, Root, StoreDamagedError, backend_for, create_store,
                             location, open_store, schema)

KEY = "c0ffee" * 4
N, D, ROWS = 70, 5, 32  # three chunks: 32 + 32 + 6 rows


def metadata(key: str = KEY, n: int = N, d: int = D, rows: int = ROWS, views: int = 1,
             **extra: Any) -> dict[str, Any]:
    """The metadata `featstore extract` would write for a small test set."""
    return {"schema_version": schema.SCHEMA_VERSION, "key": key, "complete": False,
            "n_samples": n, "n_features": d, "n_views": views, "dtype": "float16",
            "chunk_rows": rows, "backbone": {"id": "test"},
            "dataset": {"name": "t", "split": "train", "classes": ["a", "b"],
                        "task": "classification"}, **extra}


def write_set(path: Any, n: int = N, d: int = D, rows: int = ROWS, views: int = 1,
              complete: bool = True, key: str = KEY, **extra: Any
              ) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Create a set for the finished path ``path`` and write every chunk (then mark it
    complete, unless asked not to); ``(path written, features, valid, labels)``."""
    rng = np.random.default_rng(0)
    shape = (n, views, d) if views > 1 else (n, d)
    feats = rng.normal(size=shape).astype(np.float16)
    valid = np.ones(n, bool)
    valid[3] = False
    labels = rng.integers(0, 2, n)
    store = create_store(path, metadata=metadata(key, n, d, rows, views, **extra),
                         n_features=d, n_views=views, dtype="float16", chunk_rows=rows,
                         sample_ids=[f"id{i}" for i in range(n)], labels=labels, codec="zstd")
    with store:
        for c in range(schema.n_chunks(n, rows)):
            s, e = schema.chunk_bounds(c, n, rows)
            store.write_chunk(c, feats[s:e], valid[s:e])
        if complete:
            store.mark_complete()
        written = store.path
    return written, feats, valid, labels


def _chunk(feats: np.ndarray, valid: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    s, e = schema.chunk_bounds(c, len(valid), ROWS)
    return feats[s:e], valid[s:e]


class StoreConformance:
    """What every backend must do; subclass it once per backend (see the module)."""

    backend: type[FeatureStore]

    def poke(self, path: Path, array: str, index: Any, value: Any) -> None:
        """Write ``value`` at ``index`` of ``array`` of the set at ``path`` with the
        format's own library, bypassing featstore and its records."""
        raise NotImplementedError

    def drop_metadata(self, path: Path) -> None:
        """Remove the featstore metadata of the set at ``path`` with the format's own
        library (as a writer killed before writing it leaves a set)."""
        raise NotImplementedError

    @pytest.fixture
    def final(self, tmp_path: Path) -> Path:
        """Where the finished set of KEY goes in a root (``tmp_path``)."""
        return tmp_path / self.backend.name_for(KEY)

    # -- names and paths ---------------------------------------------------------------
    def test_names_and_paths_round_trip(self, final):
        working = self.backend.working_path(final)
        assert final.name == f"{KEY}{self.backend.suffix}"
        assert self.backend.key_of(final.name) == (KEY, True)
        assert self.backend.key_of(working.name) == (KEY, working == final)
        assert self.backend.final_path(working) == final
        assert self.backend.working_path(working) == working
        assert backend_for(final) is self.backend and backend_for(working) is self.backend
        assert self.backend.key_of("notes.txt") is None

    def test_created_at_its_working_path_and_finished_at_its_final_one(self, final):
        store = create_store(final, metadata=metadata(), n_features=D, n_views=1,
                             dtype="float16", chunk_rows=ROWS,
                             sample_ids=[f"id{i}" for i in range(N)], labels=None, codec="zstd")
        with store:
            assert store.path == self.backend.working_path(final) and store.format == \
                self.backend.format
            for c in range(store.n_chunks):
                a, b = schema.chunk_bounds(c, N, ROWS)
                store.write_chunk(c, np.zeros((b - a, D)), np.ones(b - a, bool))
            store.mark_complete()
            assert store.path == final and store.complete
        with open_store(final) as fs:
            assert fs.labels is None and fs.verify().ok

    # -- writing, completeness, reading -----------------------------------------------
    @pytest.mark.parametrize("views", [1, 3])
    def test_round_trip(self, final, views):
        path, feats, valid, labels = write_set(final, views=views)
        assert path == final
        with open_store(final) as fs:
            assert fs.complete and fs.shape == feats.shape and fs.key == KEY
            np.testing.assert_array_equal(fs.load_features(), feats)
            np.testing.assert_array_equal(fs.valid, valid)
            np.testing.assert_array_equal(fs.labels, labels)
            assert fs.sample_ids.tolist() == [f"id{i}" for i in range(N)]
            assert fs.load_features(as_torch=True).shape == feats.shape
            chunks = list(fs.iter_chunks())
            assert [(s, e) for s, e, _ in chunks] == [(0, 32), (32, 64), (64, 70)]
            np.testing.assert_array_equal(np.concatenate([b for *_, b in chunks]), feats)
            assert fs.verify().ok and fs.classes == ["a", "b"]

    def test_incomplete_never_reads_complete(self, final, tmp_path):
        path, *_ = write_set(final, complete=False)
        assert path == self.backend.working_path(final)
        with pytest.raises(StoreIncompleteError, match="Rerun the same"):
            open_store(final)
        with open_store(path, allow_incomplete=True) as fs:
            assert not fs.complete and fs.committed_chunks() == {0, 1, 2}
            report = fs.verify()
            assert not report.ok and report.complete is False
        [entry] = Root(tmp_path).entries()
        assert (entry.key, entry.complete, entry.state) == (KEY, False, "incomplete")

    def test_cannot_mark_complete_with_missing_chunks(self, final):
        store = create_store(final, metadata=metadata(), n_features=D, n_views=1,
                             dtype="float16", chunk_rows=ROWS,
                             sample_ids=[f"i{i}" for i in range(N)], labels=None, codec="zstd")
        with store:
            store.write_chunk(0, np.zeros((32, 5)), np.ones(32, bool))
            with pytest.raises(StoreIncompleteError, match="never written"):
                store.mark_complete()
            assert store.committed_chunks() == {0} and not store.complete

    def test_a_crash_between_data_and_record_is_resumed(self, final, monkeypatch):
        """A chunk whose data reached the disk but not its checksum record is not
        committed: the resumed writer recomputes it, and the set ends as if never
        interrupted."""
        _, feats, valid, _ = write_set(final.parent / f"ref{self.backend.suffix}",
                                       key="0" * 24)
        store = create_store(final, metadata=metadata(), n_features=D, n_views=1,
                             dtype="float16", chunk_rows=ROWS,
                             sample_ids=[f"id{i}" for i in range(N)],
                             labels=np.random.default_rng(0).integers(0, 2, N), codec="zstd")
        real = type(store)._write_digest

        def killed(self, index, digest):
            if index == 1:
                raise OSError(errno.EIO, "killed before the record")
            real(self, index, digest)

        monkeypatch.setattr(type(store), "_write_digest", killed)
        with store:
            store.write_chunk(0, *_chunk(feats, valid, 0))
            with pytest.raises(OSError):
                store.write_chunk(1, *_chunk(feats, valid, 1))
        monkeypatch.undo()
        with open_store(self.backend.working_path(final), "r+", allow_incomplete=True) as fs:
            assert fs.committed_chunks() == {0}
            for c in (1, 2):
                fs.write_chunk(c, *_chunk(feats, valid, c))
            fs.mark_complete()
        with open_store(final) as fs:
            assert fs.verify().ok
            np.testing.assert_array_equal(fs.load_features(), feats)

    def test_writes_are_refused_in_mode_r(self, final):
        write_set(final)
        with open_store(final) as fs:
            with pytest.raises(ReadOnlyStoreError):
                fs.write_chunk(0, np.zeros((32, 5)), np.ones(32, bool))
            with pytest.raises(ReadOnlyStoreError):
                fs.mark_complete()
            with pytest.raises(ReadOnlyStoreError):
                fs.invalidate_chunks([0])
        with open_store(final) as fs:
            assert fs.verify().ok

    def test_a_missing_set_is_not_found(self, final):
        with pytest.raises(StoreNotFoundError):
            open_store(final)

    # -- damage: checked reads, verify, repair -----------------------------------------
    def test_checked_reads_and_verify_find_changed_feature_bytes(self, final):
        _, feats, *_ = write_set(final)
        self.poke(final, schema.FEATURES, (40, 0), 99.0)  # row 40: chunk 1
        with open_store(final) as fs:
            with pytest.raises(StoreDamagedError) as err:
                fs.load_features()
            assert err.value.chunks == [1] and err.value.array == schema.FEATURES
            np.testing.assert_array_equal(fs.features[5:9], feats[5:9])  # not whole chunks
            report = fs.verify()
            assert not report.ok and report.mismatched == [1] and report.repairable
        with open_store(final, verify_reads=False) as fs:
            assert fs.load_features()[40, 0] == 99.0

    def test_checked_reads_and_verify_find_changed_labels(self, final):
        _, _, _, labels = write_set(final)
        self.poke(final, schema.LABELS, 0, 1 - labels[0])
        with open_store(final) as fs:
            with pytest.raises(StoreDamagedError, match="labels") as err:
                fs.labels
            assert err.value.array == schema.LABELS
            report = fs.verify()
            assert not report.ok and not report.repairable and report.arrays[schema.LABELS]

    def test_damaged_chunks_are_repaired_by_re_extracting_them(self, final):
        from featstore.store.integrity import mark_for_reextraction

        _, feats, valid, _ = write_set(final)
        self.poke(final, schema.FEATURES, (40, 0), 99.0)
        assert mark_for_reextraction(final) == [1]
        with pytest.raises(StoreIncompleteError):
            open_store(final)
        with open_store(self.backend.working_path(final), "r+", allow_incomplete=True) as fs:
            assert fs.committed_chunks() == {0, 2}
            fs.write_chunk(1, *_chunk(feats, valid, 1))
            fs.mark_complete()
        with open_store(final) as fs:
            assert fs.verify().ok
            np.testing.assert_array_equal(fs.load_features(), feats)
        assert not (final.parent / ".leases").exists()

    # -- metadata ----------------------------------------------------------------------
    def test_metadata_round_trip(self, final):
        extra = {"note": "naïve ☃ text", "nested": {"list": [1, 2.5, None, True], "n": None},
                 "created_by": "someone@somewhere"}
        write_set(final, **extra)
        with open_store(final) as fs:
            meta = fs.metadata
        for k, v in extra.items():
            assert meta[k] == v
        assert meta["complete"] is True and meta["key"] == KEY
        assert set(meta[schema.ARRAYS_SHA256]) == {schema.LABELS, schema.SAMPLE_IDS,
                                                   schema.VALID}
        assert self.backend.read_metadata(final) == meta

    def test_metadata_of_an_unfinished_set_says_so(self, final):
        path, *_ = write_set(final, complete=False)
        meta = self.backend.read_metadata(path)
        assert meta["complete"] is False and meta["key"] == KEY

    def test_metadata_of_nothing_is_not_found(self, final):
        with pytest.raises(FileNotFoundError):
            self.backend.read_metadata(final)

    # -- files: what roots, rm, copy and pack ask --------------------------------------
    def test_files_lists_every_file_of_the_set_with_its_size(self, final, tmp_path):
        write_set(final)
        files = self.backend.files(final)
        assert files and sum(files.values()) == location.size_of(final)
        for name, size in files.items():
            member = self.backend.member_path(final, name)
            assert member.is_file() and member.stat().st_size == size
            assert self.backend.is_member(name.split("/")[0])
        assert set(self.backend.completion_files) <= set(files)
        assert set(self.backend.layout_files) <= set(files)
        assert self.backend.files(tmp_path / "absent") == {}

    def test_looks_like_set_only_for_what_featstore_writes(self, final, tmp_path):
        write_set(final)
        assert self.backend.looks_like_set(final)
        stranger = tmp_path / f"thesis{self.backend.suffix}"
        if self.backend.single_file:
            stranger.write_text("years of work")
        else:
            stranger.mkdir()
            (stranger / "thesis.tex").write_text("years of work")
        assert not self.backend.looks_like_set(stranger)

    def test_a_copy_file_by_file_reads_complete_only_once_committed(self, final, tmp_path):
        """The recipe of `featstore copy` (featstore.store.formats), step by step."""
        write_set(final)
        dst = tmp_path / "dst" / final.name
        working = self.backend.working_path(dst)
        files = self.backend.files(final)
        last = [n for n in self.backend.completion_files if n in files]
        for name in sorted(set(files) - set(last)):
            location.put_atomic(self.backend.member_path(working, name),
                                self.backend.member_path(final, name).read_bytes())
        for name in last:
            data = self.backend.member_path(final, name).read_bytes()
            location.put_atomic(self.backend.member_path(working, name),
                                self.backend.marked_incomplete(name, data))
        with pytest.raises(StoreIncompleteError):
            open_store(dst)
        with open_store(working, allow_incomplete=True) as fs:
            report = fs.verify()
            assert not report.missing and not report.mismatched and not report.problems
        for name in last:
            location.put_atomic(self.backend.member_path(working, name),
                                self.backend.member_path(final, name).read_bytes())
        self.backend.commit(working, dst)
        with open_store(dst) as fs:
            assert fs.complete and fs.verify().ok
        assert self.backend.files(dst) == files

    def test_root_lists_it_under_its_format(self, final, tmp_path):
        write_set(final)
        root = Root(tmp_path)
        [entry] = root.entries()
        assert (entry.key, entry.format, entry.complete) == (KEY, self.backend.format, True)
        assert entry.backend is self.backend and entry.path == final
        assert root.path_for(KEY, self.backend.format) == final
        assert entry.summary()["n_features"] == D

    def test_a_set_whose_metadata_is_gone_is_damaged_not_complete(self, final, tmp_path):
        write_set(final)
        self.drop_metadata(final)
        assert self.backend.read_metadata(final) is None
        with pytest.raises(StoreCorruptError, match="not a featstore feature set"):
            open_store(final)
        [entry] = Root(tmp_path).entries(damaged=True)
        assert (entry.key, entry.state, entry.complete) == (KEY, "damaged", False)
