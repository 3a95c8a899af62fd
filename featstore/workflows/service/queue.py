"""The persistent job queue: one SQLite file shared by the server and its workers.

Every change is one short transaction (``BEGIN IMMEDIATE``, so two writers never
interleave); the file is in WAL mode so readers never wait for a writer. A running job
carries a lease that its worker renews; a job whose lease ran out (its worker died or
hung) goes back to the queue, or fails once it has used all its attempts.

States: ``queued`` → ``running`` → ``done`` | ``failed`` (and ``running`` → ``queued``
on a retry, a lost lease or a clean shutdown).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from featstore.errors import ConfigError
from featstore.workflows.service.errors import ServiceBusyError
from featstore.workflows.service.requests import JobRequest

SCHEMA_VERSION = 1
STATES = ("queued", "running", "done", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_key TEXT NOT NULL,
    state TEXT NOT NULL,
    config TEXT NOT NULL,            -- JSON: the job's extract options (never a secret)
    backbone TEXT NOT NULL,
    backbone_group TEXT NOT NULL,    -- jobs that share one loaded backbone
    dataset TEXT NOT NULL,
    split TEXT NOT NULL,
    submitted_by TEXT NOT NULL,      -- the token's name, never the token
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    worker TEXT, worker_pid INTEGER, device TEXT,
    lease_owner TEXT,                -- worker/pid/attempt holding the lease
    lease_expires REAL,
    not_before REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
    store_key TEXT, store_path TEXT, chunks_done INTEGER, chunks_total INTEGER,
    result TEXT,                     -- JSON ExtractResult of a done job
    error TEXT,                      -- why a failed job failed
    last_error TEXT                  -- the latest failed attempt's error
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, backbone_group);
CREATE INDEX IF NOT EXISTS jobs_request ON jobs (request_key, state);
CREATE INDEX IF NOT EXISTS jobs_submitter ON jobs (submitted_by, state);
"""
#: At most one queued or running job per request key, enforced by SQLite itself.
ONE_ACTIVE = ("CREATE UNIQUE INDEX IF NOT EXISTS jobs_one_active ON jobs (request_key) "
              "WHERE state IN ('queued', 'running')")


def default_queue_path(root: str) -> Path:
    """ROOT/.featstore/queue.sqlite for a local root; for a URL root (s3://...), a file
    under ~/.cache/featstore named by a hash of the URL."""
    if "://" in root:
        digest = hashlib.sha256(root.encode()).hexdigest()[:16]
        return Path.home() / ".cache" / "featstore" / f"queue-{digest}.sqlite"
    return Path(root).expanduser().resolve() / ".featstore" / "queue.sqlite"


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(
        timespec="seconds")


class JobQueue:
    """The queue at ``path`` (created by :meth:`init`); each call opens its own connection,
    so one object may be used from several threads and processes."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.logs_dir = self.path.parent / f"{self.path.stem}-logs"

    # -- connections -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with closing(self._connect()) as db:
            yield db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def init(self, root: str) -> None:
        """Create the file and tables (WAL mode); refuse a queue made for another root."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(SCHEMA)
            try:
                db.execute(ONE_ACTIVE)
            except sqlite3.IntegrityError:  # an old queue that already holds duplicates:
                pass                        # submit() still joins instead of duplicating
        with self._write() as db:
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
            if not meta:
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("schema_version", str(SCHEMA_VERSION)), ("root", root)])
            elif meta.get("root") != root:
                raise ConfigError(
                    f"The queue {self.path} belongs to the root {meta.get('root')}, not {root}. "
                    "Give this root its own queue with --queue PATH.")
            elif int(meta.get("schema_version", 0)) > SCHEMA_VERSION:
                raise ConfigError(f"The queue {self.path} was made by a newer featstore; "
                                  "upgrade featstore or give --queue another file.")

    # -- logs --------------------------------------------------------------------------
    def log_path(self, job_id: int) -> Path:
        return self.logs_dir / f"job-{int(job_id)}.log"

    def append_log(self, job_id: int, line: str, *, new: bool = False) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with open(self.log_path(job_id), "w" if new else "a", encoding="utf-8") as f:
            f.write(f"{stamp} {line}\n")

    # -- submitting --------------------------------------------------------------------
    def finished(self, request_key: str) -> dict[str, Any] | None:
        """The latest done job with this request key, if any."""
        with self._read() as db:
            row = db.execute("SELECT * FROM jobs WHERE request_key = ? AND state = 'done' "
                             "ORDER BY id DESC LIMIT 1", (request_key,)).fetchone()
        return view(row) if row else None

    def submit(self, requests: list[JobRequest], *, submitted_by: str, max_attempts: int,
               max_queue: int, max_per_token: int,
               is_complete: Callable[[str], bool] = lambda path: False) -> list[dict[str, Any]]:
        """Answer each request: ``cached`` (a finished job whose store is complete),
        ``joined`` (an equal job is queued or running) or ``queued`` (a new job).

        All or nothing: when the new jobs would pass ``max_queue`` queued jobs, or
        ``max_per_token`` active jobs of this token, nothing is queued and
        :class:`ServiceBusyError` (status 503 or 429) says so.

        Equal requests at the same moment make one job: whether an equal job is active
        or has just finished is decided in the same transaction as the insert (a job
        that finished after the first look, outside it, is a cache hit, not a new job).
        """
        answers: list[dict[str, Any] | None] = []
        looked: list[int | None] = []  # the done job checked (and found incomplete), if any
        for req in requests:
            done = self.finished(req.request_key)
            if done and done["path"] and is_complete(done["path"]):
                answers.append({**_brief(done), "status": "cached"})
            else:
                answers.append(None)
            looked.append(done["id"] if done else None)
        now = time.time()
        new: list[int] = []
        with self._write() as db:
            for i, req in enumerate(requests):
                if answers[i] is not None:
                    continue
                row = db.execute("SELECT * FROM jobs WHERE request_key = ? AND state IN "
                                 "('queued', 'running') ORDER BY id LIMIT 1",
                                 (req.request_key,)).fetchone()
                if row is not None:
                    answers[i] = {**_brief(view(row)), "status": "joined"}
                    continue
                row = db.execute("SELECT * FROM jobs WHERE request_key = ? AND state = 'done' "
                                 "ORDER BY id DESC LIMIT 1", (req.request_key,)).fetchone()
                if row is not None and row["id"] != looked[i] and row["store_path"] \
                        and is_complete(row["store_path"]):  # finished since the first look
                    answers[i] = {**_brief(view(row)), "status": "cached"}
                    continue
                cur = db.execute(
                    "INSERT INTO jobs (request_key, state, config, backbone, backbone_group, "
                    "dataset, split, submitted_by, max_attempts, created_at, updated_at) "
                    "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (req.request_key, json.dumps(req.config, sort_keys=True), req.backbone,
                     req.backbone_group, req.dataset, req.split, submitted_by, max_attempts,
                     now, now))
                new.append(int(cur.lastrowid))
                answers[i] = {"id": int(cur.lastrowid), "status": "queued", "state": "queued",
                              "backbone": req.backbone, "dataset": req.dataset,
                              "split": req.split, "key": None, "path": None}
            if new:
                queued = db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'"
                                    ).fetchone()[0]
                if queued > max_queue:
                    before = queued - len(new)
                    raise ServiceBusyError(
                        f"queue full ({before} jobs queued); retry later", status=503)
                mine = db.execute("SELECT COUNT(*) FROM jobs WHERE submitted_by = ? AND state "
                                  "IN ('queued', 'running')", (submitted_by,)).fetchone()[0]
                if mine > max_per_token:
                    before = mine - len(new)
                    raise ServiceBusyError(
                        f"too many active jobs for {submitted_by!r}: {before} queued or running, "
                        f"at most {max_per_token} (asked for {len(new)} more); wait for some "
                        "to finish and retry", status=429)
        for answer, req in zip(answers, requests):
            assert answer is not None
            if answer["status"] == "queued" and answer["id"] in new:
                self.append_log(answer["id"], f"queued by {submitted_by}: {req.backbone} on "
                                f"{req.dataset} (split {req.split}), request key "
                                f"{req.request_key}", new=True)
            elif answer["status"] == "joined":
                self.append_log(answer["id"], f"joined by {submitted_by}")
        return [a for a in answers if a is not None]

    # -- workers -----------------------------------------------------------------------
    def claim(self, worker: str, pid: int, device: str, lease_seconds: float,
              prefer: list[str]) -> dict[str, Any] | None:
        """Take the next job, or None: first of a backbone group in ``prefer`` (the
        worker's loaded backbones), else of the group with the most queued jobs."""
        now = time.time()
        with self._read() as db:
            if db.execute("SELECT 1 FROM jobs WHERE state = 'queued' AND not_before <= ? "
                          "LIMIT 1", (now,)).fetchone() is None:
                return None
        with self._write() as db:
            self._expire(db, now)
            row = None
            for group in prefer:
                row = db.execute("SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? "
                                 "AND backbone_group = ? ORDER BY id LIMIT 1",
                                 (now, group)).fetchone()
                if row is not None:
                    break
            if row is None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE state = 'queued' AND not_before <= ? AND "
                    "backbone_group = (SELECT backbone_group FROM jobs WHERE state = 'queued' "
                    "AND not_before <= ? GROUP BY backbone_group ORDER BY COUNT(*) DESC, "
                    "MIN(id) LIMIT 1) ORDER BY id LIMIT 1", (now, now)).fetchone()
            if row is None:
                return None
            attempt = row["attempts"] + 1
            owner = f"{worker}/{pid}/{attempt}"
            db.execute("UPDATE jobs SET state = 'running', attempts = ?, worker = ?, "
                       "worker_pid = ?, device = ?, lease_owner = ?, lease_expires = ?, "
                       "started_at = ?, updated_at = ?, chunks_done = NULL, chunks_total = NULL "
                       "WHERE id = ?",
                       (attempt, worker, pid, device, owner, now + lease_seconds, now, now,
                        row["id"]))
            claimed = db.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone()
        return {**view(claimed), "lease_owner": owner, "backbone_group": row["backbone_group"]}

    def heartbeat(self, job_id: int, owner: str, lease_seconds: float,
                  progress: tuple[int, int] | None = None) -> bool:
        """Renew the lease (and record progress); False when the lease was lost."""
        now = time.time()
        with self._write() as db:
            cur = db.execute("UPDATE jobs SET lease_expires = ?, updated_at = ? WHERE id = ? "
                             "AND lease_owner = ? AND state = 'running'",
                             (now + lease_seconds, now, job_id, owner))
            if cur.rowcount and progress is not None:
                db.execute("UPDATE jobs SET chunks_done = ?, chunks_total = ? WHERE id = ?",
                           (progress[0], progress[1], job_id))
            return bool(cur.rowcount)

    def started(self, job_id: int, owner: str, store_key: str | None,
                store_path: str | None) -> None:
        """Record which feature set a running job writes."""
        with self._write() as db:
            db.execute("UPDATE jobs SET store_key = ?, store_path = ?, updated_at = ? "
                       "WHERE id = ? AND lease_owner = ?",
                       (store_key, store_path, time.time(), job_id, owner))

    def finish(self, job_id: int, owner: str, result: dict[str, Any]) -> bool:
        """Mark done with its result; False if another worker holds the job by now."""
        now = time.time()
        chunks = (result.get("resumed_chunks") or 0) + (result.get("computed_chunks") or 0)
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'done', result = ?, store_key = ?, store_path = ?, "
                "finished_at = ?, updated_at = ?, lease_expires = NULL, error = NULL, "
                "chunks_done = COALESCE(chunks_total, ?), chunks_total = COALESCE(chunks_total, ?)"
                " WHERE id = ? AND ((state = 'running' AND lease_owner = ?) OR state = 'queued')",
                (json.dumps(result, default=str), result.get("key"), result.get("path"), now,
                 now, chunks or None, chunks or None, job_id, owner))
            return bool(cur.rowcount)

    def fail(self, job_id: int, owner: str, error: str, *, retry_delay: float = 1.0,
             permanent: bool = False) -> str | None:
        """Record a failed attempt: back to the queue (after ``retry_delay`` × attempts
        seconds) while attempts remain, else ``failed``; ``permanent`` errors (bad
        options or data: a retry would fail the same way) fail at once. Returns the new
        state."""
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT attempts, max_attempts FROM jobs WHERE id = ? AND "
                             "lease_owner = ? AND state = 'running'", (job_id, owner)).fetchone()
            if row is None:
                return None
            if permanent or row["attempts"] >= row["max_attempts"]:
                db.execute("UPDATE jobs SET state = 'failed', error = ?, last_error = ?, "
                           "finished_at = ?, updated_at = ?, lease_expires = NULL WHERE id = ?",
                           (error, error, now, now, job_id))
                return "failed"
            db.execute("UPDATE jobs SET state = 'queued', last_error = ?, updated_at = ?, "
                       "not_before = ?, lease_expires = NULL, lease_owner = NULL, worker = NULL, "
                       "worker_pid = NULL WHERE id = ?",
                       (error, now, now + retry_delay * row["attempts"], job_id))
            return "queued"

    def release(self, job_id: int, owner: str, note: str) -> None:
        """Give a job back without counting the attempt (its worker is shutting down)."""
        now = time.time()
        with self._write() as db:
            cur = db.execute("UPDATE jobs SET state = 'queued', attempts = attempts - 1, "
                             "updated_at = ?, not_before = 0, lease_expires = NULL, "
                             "lease_owner = NULL, worker = NULL, worker_pid = NULL "
                             "WHERE id = ? AND lease_owner = ? AND state = 'running'",
                             (now, job_id, owner))
        if cur.rowcount:
            self.append_log(job_id, note)

    def expire_leases(self) -> list[int]:
        """Requeue (or fail) running jobs whose lease ran out; their ids."""
        with self._write() as db:
            return self._expire(db, time.time())

    def abandon(self, pid: int, reason: str) -> list[int]:
        """The worker process ``pid`` is gone: treat its jobs' leases as expired now."""
        with self._write() as db:
            return self._expire(db, time.time(), pid=pid, reason=reason)

    def _expire(self, db: sqlite3.Connection, now: float, *, pid: int | None = None,
                reason: str | None = None) -> list[int]:
        if pid is None:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running' AND lease_expires < ?",
                              (now,)).fetchall()
        else:
            rows = db.execute("SELECT * FROM jobs WHERE state = 'running' AND worker_pid = ?",
                              (pid,)).fetchall()
        for row in rows:
            why = reason or "stopped renewing its lease (it died or hung)"
            what = (f"worker {row['worker']} (pid {row['worker_pid']}) {why} on attempt "
                    f"{row['attempts']} of {row['max_attempts']}")
            if row["attempts"] >= row["max_attempts"]:
                db.execute("UPDATE jobs SET state = 'failed', error = ?, last_error = ?, "
                           "finished_at = ?, updated_at = ?, lease_expires = NULL WHERE id = ?",
                           (what, what, now, now, row["id"]))
                note = f"{what}: failed, no attempts left"
            else:
                db.execute("UPDATE jobs SET state = 'queued', last_error = ?, updated_at = ?, "
                           "not_before = 0, lease_expires = NULL, lease_owner = NULL, "
                           "worker = NULL, worker_pid = NULL WHERE id = ?", (what, now, row["id"]))
                note = f"{what}: queued again; the next attempt resumes from committed chunks"
            try:
                self.append_log(row["id"], note)
            except OSError:
                pass
        return [row["id"] for row in rows]

    # -- reading -----------------------------------------------------------------------
    def get(self, job_id: int) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return view(row) if row else None

    def list(self, states: list[str] | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """The newest ``limit`` jobs (in ``states``), oldest first."""
        query, args = "SELECT * FROM jobs", []
        if states:
            query += f" WHERE state IN ({', '.join('?' * len(states))})"
            args += states
        query += " ORDER BY id DESC LIMIT ?"
        with self._read() as db:
            rows = db.execute(query, (*args, limit)).fetchall()
        return [view(r) for r in reversed(rows)]

    def counts(self) -> dict[str, int]:
        with self._read() as db:
            got = dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
        return {s: int(got.get(s, 0)) for s in STATES}


def view(row: sqlite3.Row) -> dict[str, Any]:
    """A job as the API shows it."""
    progress = None
    if row["chunks_total"]:
        progress = {"chunks_done": row["chunks_done"] or 0, "chunks_total": row["chunks_total"]}
    return {
        "id": row["id"], "state": row["state"], "backbone": row["backbone"],
        "dataset": row["dataset"], "split": row["split"], "request_key": row["request_key"],
        "submitted_by": row["submitted_by"], "attempts": row["attempts"],
        "max_attempts": row["max_attempts"], "worker": row["worker"],
        "worker_pid": row["worker_pid"], "device": row["device"],
        "created_at": iso(row["created_at"]), "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]), "progress": progress,
        "key": row["store_key"], "path": row["store_path"],
        "result": json.loads(row["result"]) if row["result"] else None,
        "error": row["error"], "last_error": row["last_error"],
        "options": json.loads(row["config"]),
    }


def _brief(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in ("id", "state", "backbone", "dataset", "split", "key", "path")}
