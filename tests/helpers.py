"""Helpers shared by the tests (imported as ``helpers``; fixtures stay in conftest.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

def make_images(n: int, size: int = 16, classes: int = 3, seed: int = 0):
    """Class-dependent images so that features carry label information."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = rng.integers(0, 255, (classes, size, size))
    noise = rng.integers(-40, 40, (n, size, size))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def tiny_extract_args(dataset: Path, root: Path, *extra: str) -> list[str]:
    """CLI arguments of a fast extraction with timm's tiny random test_resnet."""
    return ["extract", "--backbone", "timm:test_resnet", "--random-weights", "--image-size", "32",
            "--dataset", str(dataset), "--root", str(root), "--chunk-rows", "32",
            "--batch-size", "8", "--workers", "0", "--no-progress", *extra]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a real S3-compatible server on 127.0.0.1 (moto's, from PyPI) ----------------------
#: A secret no test ever expects to see in a store, a log or a job queue.
S3_TEST_SECRET = "featstore-test-secret-4b1d9c"


def start_moto(env: dict[str, str] | None = None):
    """Start moto's S3 server on a free port of 127.0.0.1; (process, endpoint) once it listens."""
    # This interpreter's moto first: a moto_server on PATH may be another Python's.
    exe = str(Path(sys.executable).with_name("moto_server"))
    if not Path(exe).exists():
        exe = shutil.which("moto_server") or exe
    if not Path(exe).exists():
        pytest.skip("moto_server not installed: pip install -e '.[test]'")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("moto_server did not start on 127.0.0.1")


# -- trees before and after ----------------------------------------------------------------
#: What a tree snapshot records of each entry: kind, size, mode bits and content hash.
Snapshot = dict[str, tuple[str, int, int, str]]


def snapshot(*roots: Path) -> Snapshot:
    """Every file, folder and link under ``roots`` (links are not followed).

    Compare two snapshots to assert that an operation wrote, changed or removed nothing
    outside what it was allowed to touch.
    """
    out: Snapshot = {}
    for root in roots:
        root = Path(root)
        if not os.path.lexists(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    out[str(p)] = ("link", 0, 0, os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    out[str(p)] = ("dir", 0, stat.S_IMODE(st.st_mode), "")
                else:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                    out[str(p)] = ("file", st.st_size, stat.S_IMODE(st.st_mode), digest)
    return out


def diff_snapshots(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


def assert_unchanged(before: Snapshot, after: Snapshot, *, allow_prefix: tuple[str, ...] = ()
                     ) -> None:
    """Nothing added, removed or changed, except under the paths in ``allow_prefix``."""
    d = diff_snapshots(before, after)
    bad = {k: [p for p in v if not p.startswith(tuple(str(a) for a in allow_prefix))]
           for k, v in d.items()}
    assert not any(bad.values()), f"tree changed: {bad}"


def error_lines(result: Any) -> list[str]:
    """The non-empty lines a click result printed on stderr (stdout if not separated)."""
    try:
        text = result.stderr
    except (ValueError, AttributeError):
        text = result.output
    return [line for line in text.splitlines() if line.strip()]


def assert_user_error(result: Any, *needles: str) -> str:
    """A CLI call (click's CliRunner or a subprocess) failed as a user error should.

    Exit code not 0, no traceback, exactly one line starting with ``Error:`` on stderr,
    and each of ``needles`` (case-insensitive) in that line. Returns the line.
    """
    code = getattr(result, "exit_code", None)
    if code is None:
        code = result.returncode
    out = (getattr(result, "output", None) or "") + (getattr(result, "stderr", None) or "")
    exc = getattr(result, "exception", None)
    assert code not in (0, None), f"exit code 0 for a user error:\n{out}"
    assert "Traceback" not in out, out
    if exc is not None:
        assert isinstance(exc, SystemExit), f"unhandled {type(exc).__name__}: {exc}\n{out}"
    lines = [line for line in error_lines(result) if line.startswith("Error:")]
    assert len(lines) == 1, f"expected one 'Error:' line, got {lines}:\n{out}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]


# -- the `fast` subset (pytest -m fast) ---------------------------------------------------
#: The tests of the edit loop: under a minute on 2 cores, and every package touched
#: (utils, store, data, backbones, extract, tuners, analysis, the workflows, the CLI,
#: and the hostile-input checks that refuse early). Per test module: "*" for all of
#: it, else the names of the test functions (every parameter of each). conftest.py marks
#: them ``fast``; tests/test_suite.py checks that every name here still exists.
FAST_TESTS: dict[str, str | frozenset[str]] = {
    "test_architecture.py": "*",
    "test_data.py": "*",
    "test_noise.py": "*",
    "test_registries.py": "*",
    "test_regularizers.py": "*",
    "test_spectrum.py": "*",
    "test_store_conformance.py": "*",
    "test_suite.py": "*",
    "test_tuners.py": "*",
    "test_utils.py": "*",
    "test_extract.py": frozenset({
        "test_extract_then_cache_hit", "test_config_validation",
        "test_dimension_mismatch_is_reported"}),
    "test_store.py": frozenset({
        "test_root_lists_and_resolves_prefixes", "test_newer_schema_refused", "test_not_a_store",
        "test_hdf5_appears_under_final_name_only_when_complete",
        "test_plain_readers_without_featstore", "test_hold_lease_releases_when_the_block_fails"}),
    "test_cli.py": frozenset({
        "test_every_command_has_help_with_an_example", "test_help_lists_every_command",
        "test_help_does_not_import_torch", "test_bad_input_clear_message_no_traceback",
        "test_bad_manifest", "test_modality_mismatch", "test_plugin_backbone"}),
    "test_tune_cli.py": frozenset({
        "test_tune_bad_hyperparameter", "test_tune_bad_features_append_nothing",
        "test_saved_heads_eval_and_predict"}),
    "test_pretrain.py": frozenset({
        "test_bad_options", "test_one_class_data_refused", "test_empty_validation_split_refused",
        "test_pretrain_cli_bad_input", "test_card_architecture_mismatch_in_python"}),
    "test_sharing.py": frozenset({
        "test_pack_unpack_and_ls_mistakes_are_explained", "test_unpack_refuses_unsafe_members",
        "test_read_only_root_is_explained", "test_ls_filters_and_json",
        "test_unpack_refuses_a_tampered_pack", "test_racing_acquirers_one_wins"}),
    "test_service.py": frozenset({
        "test_malformed_requests_get_400_413_404_405",
        "test_missing_or_wrong_token_is_refused_and_queues_nothing",
        "test_request_keys_follow_the_values",
        "test_requests_are_bounded_and_plugins_must_be_allowed", "test_tokens_file_and_env",
        "test_openapi_schema_describes_the_api"}),
    "test_experiment.py": frozenset({"test_report_averages_use_each_jobs_own_id_and_ood"}),
    "test_text_backbones.py": frozenset({
        "test_gpt2_last_token_defaults_and_ignores_padding", "test_bad_text_backbones"}),
    "test_openai_api.py": frozenset({"test_unreachable"}),
    "test_hostile_backbones.py": frozenset({
        "test_bad_specs_and_plugins", "test_bad_weights_files",
        "test_weights_that_are_not_a_file", "test_options_a_backbone_would_ignore",
        "test_bad_openai_base_urls", "test_unknown_timm_pooling"}),
    "test_hostile_packs.py": frozenset({
        "test_pack_and_copy_refuse_links_in_a_store",
        "test_a_genuine_pack_unpacks_byte_identical_with_sizes",
        "test_too_many_members_are_refused", "test_a_refused_pack_does_not_create_the_root",
        "test_unpack_into_a_read_only_root_is_one_line",
        "test_a_full_disk_while_unpacking_leaves_nothing"}),
    "test_hostile_roots.py": frozenset({
        "test_rm_says_what_it_removes", "test_rm_refuses_a_set_with_a_live_lease",
        "test_rm_removes_a_damaged_set_by_prefix", "test_ls_of_a_file_is_one_error",
        "test_full_disk_when_a_lease_is_taken", "test_extract_on_a_full_disk"}),
    "test_hostile_service.py": frozenset({
        "test_bad_json_bodies_get_400", "test_paths_outside_the_data_folders_are_refused",
        "test_options_out_of_bounds_are_refused", "test_extract_cli_refuses_out_of_range_values",
        "test_wrong_tokens_get_401", "test_config_files_and_the_api_share_the_ranges"}),
    "test_hostile_stores.py": frozenset({
        "test_forged_metadata_is_one_clear_error", "test_verify_names_the_damaged_array",
        "test_damaged_hdf5_set_is_refused", "test_newer_schema_is_still_a_schema_error",
        "test_legacy_set_verifies_and_says_labels_are_unchecked"}),
}


def is_fast(module: str, function: str) -> bool:
    """Whether the test function ``function`` of the test file ``module`` (a file name)
    is in :data:`FAST_TESTS`."""
    chosen = FAST_TESTS.get(module)
    return chosen == "*" or (chosen is not None and function in chosen)


def fill_disk_at_chunk(monkeypatch: pytest.MonkeyPatch, index: int) -> Any:
    """Make Zarr stores fail with ENOSPC when chunk ``index`` is written (chunks before
    it are written normally). Returns a function that frees the disk again."""
    import errno

    from featstore.store._zarr import ZarrStore

    real = ZarrStore._write_rows

    def full_disk(self: Any, i: int, features: Any, valid: Any) -> Any:
        if i == index:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, i, features, valid)

    monkeypatch.setattr(ZarrStore, "_write_rows", full_disk)
    return lambda: monkeypatch.setattr(ZarrStore, "_write_rows", real)
