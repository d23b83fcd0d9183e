"""Archive-scale runs: stream notes from sources, shard, process shards in worker processes,
commit each shard atomically, and aggregate -- incrementally and safe to kill at any point.

Layout of the state kept in the output folder (``OUT/.calcmine/``)::

    shards/<seq>-<digest>/    one committed shard: notes.parquet (ids, hashes, text),
                              mentions / labs / conditions / failures .parquet, shard.json
    staging/<seq>-<digest>.parquet   notes waiting to be processed (deleted once committed)
    aggregate/                rows spooled per bucket while aggregating (Arrow IPC, temporary)

How a run stays correct:

- Every note gets a content hash (id, patient, date, type, text). A note whose id and hash are
  already in a committed shard made with the same NLP version is not processed again.
- A shard is written into a temporary folder and renamed into ``shards/`` in one step, so a
  shard is either complete or absent; a killed run leaves at most temporary folders and staged
  files, which the next run removes and redoes.
- Aggregation reads committed shards in sequence order and keeps, for each note id, the rows of
  the newest shard holding it: a changed note supersedes its old rows, nothing is counted twice.
  It works on one bucket of patients at a time (a stable hash of patient_id; the number of
  buckets from the row counts), so its memory does not grow with the archive, and streams every
  result file into a temporary file that replaces the old one when all are written; its working
  files (``aggregate/``) are removed when it ends and by the next run if it was killed.
- The NLP version is calcmine's version plus a hash of every rule file; shards made with another
  version are ignored (their notes are reprocessed) and removed after a successful run. The case
  classifier only affects aggregation, which is always redone.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.errors import InputError
from pipeline.io import _read_txt_notes, _rename, read_chunks, validate_notes, write_parquet
from pipeline.review import REVIEW_COLUMNS

STATE = ".calcmine"
DEFAULT_SHARD_SIZE = 2000
# Shards a worker process handles before a fresh one replaces it: spaCy's vocabulary and string
# store grow with every new word a worker sees, so a long-lived worker's memory would grow with
# the archive. A replacement costs one pipeline build (~1-3 s) per 50 shards (100,000 notes).
WORKER_TASKS = 50


# ---- versions and hashes ---------------------------------------------------------------------

# the modules whose code decides a note's rows: an edit to any of them is a new NLP version
NLP_MODULES = ("nlp", "context", "labs", "tokenizer", "textutil", "model", "extensions", "resources", "tables", "vocab")


def ruleset_hash() -> str:
    """SHA-256 over every rule file shipped in ``pipeline/data`` and the source of the modules that
    turn a note into rows (names and contents): changing either reprocesses the archive."""
    digest = hashlib.sha256()
    code = importlib_resources.files("pipeline")
    for module in NLP_MODULES:
        digest.update(module.encode())
        digest.update(code.joinpath(f"{module}.py").read_bytes())
    root = importlib_resources.files("pipeline.data")

    def walk(node, prefix=""):
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            name = prefix + child.name
            if child.is_dir():
                walk(child, name + "/")
            elif child.name.endswith((".tsv", ".json")) and not name.startswith("classifier/"):
                digest.update(name.encode())
                digest.update(child.read_bytes())

    walk(root)
    return digest.hexdigest()


def nlp_version() -> str:
    from pipeline.nlp import PIPELINE_VERSION

    return f"{PIPELINE_VERSION}+rules.{ruleset_hash()[:12]}"


def note_digest(note_id: str, patient_id: str, note_date, note_type, text: str) -> bytes:
    """The note's content hash as 32 raw bytes (what the planner keeps per note in memory)."""
    # a missing date or type (None, or NaN from a pandas column) hashes as ""
    parts = [note_id, patient_id, note_date if isinstance(note_date, str) else "",
             note_type if isinstance(note_type, str) else "", text]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()


def note_hash(note_id: str, patient_id: str, note_date, note_type, text: str) -> str:
    """The note's content hash as stored in shards and the manifest (hex)."""
    return note_digest(note_id, patient_id, note_date, note_type, text).hex()


# ---- sources ---------------------------------------------------------------------------------

@dataclass
class Source:
    """One place notes come from: a file, a folder, or a SQL query."""

    kind: str  # file | folder | sql
    location: str
    query: str | None = None

    def describe(self) -> str:
        return f"sql:{_redact(self.location)}" if self.kind == "sql" else self.location


def _redact(url: str) -> str:
    """A database URL without its password, for manifests and messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used for display
        return "<database>"


def discover(inputs: list[str], sql: str | None = None, query: str | None = None) -> list[Source]:
    sources = []
    for item in inputs:
        path = Path(item)
        if any(ch in item for ch in "*?["):
            matches = sorted(Path().glob(item)) if not path.is_absolute() else sorted(Path(path.anchor).glob(str(path.relative_to(path.anchor))))
            if not matches:
                raise InputError(f"no files match {item}; check the pattern")
            sources.extend(Source("folder" if m.is_dir() else "file", str(m)) for m in matches)
        elif not path.exists():
            raise InputError(f"input not found: {path}; check the path (files: .csv .parquet .jsonl, or a folder)")
        else:
            sources.append(Source("folder" if path.is_dir() else "file", str(path)))
    if sql:
        if not query:
            raise InputError("--sql needs --query 'SELECT note_id, patient_id, text ... FROM ...'")
        sources.append(Source("sql", sql, query))
    return sources


def iter_notes(sources: list[Source], columns: dict, chunk: int, failures: list[dict]) -> Iterator[pd.DataFrame]:
    """Batches of raw notes (columns note_id, patient_id, text, note_date, note_type, source).

    A file that cannot be read is recorded in ``failures`` and skipped; the others go on.
    """
    id_col, patient_col, text_col = columns["id"], columns["patient"], columns["text"]
    for src in sources:
        if src.kind == "sql":
            yield from _sql_batches(src, columns, chunk)
            continue
        root = Path(src.location)
        files = [root] if src.kind == "file" else sorted(p for p in root.rglob("*") if p.is_file())
        txt = [p for p in files if p.suffix.lower() == ".txt"]
        for f in files:
            if f.suffix.lower() == ".txt" or f.suffix.lower() not in (".csv", ".parquet", ".pq", ".jsonl", ".ndjson"):
                continue
            try:
                for frame in read_chunks(f, chunk):
                    frame = _rename(frame, str(f), id_col, patient_col, text_col)
                    frame["source"] = str(f)
                    yield frame
            except InputError as exc:
                if src.kind == "file":
                    raise
                failures.append({"note_id": None, "patient_id": None, "stage": "read", "error": str(exc)})
        for i in range(0, len(txt), chunk):
            frame = _read_txt_notes(root if src.kind == "folder" else root.parent, txt[i : i + chunk], failures)
            frame["source"] = str(root)
            yield frame


def _sql_batches(src: Source, columns: dict, chunk: int) -> Iterator[pd.DataFrame]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    where = src.describe()
    try:
        engine = create_engine(src.location)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise InputError(f"{where}: cannot open the database ({type(exc).__name__}); check the SQLAlchemy URL") from None
    try:
        with engine.connect() as conn:
            for frame in pd.read_sql_query(text(src.query), conn, chunksize=chunk):
                frame = _rename(frame, where, columns["id"], columns["patient"], columns["text"])
                for col in ("note_id", "patient_id"):
                    frame[col] = frame[col].map(lambda v: None if v is None else str(v))
                frame["source"] = where
                yield frame
    except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
        raise InputError(f"{where}: the query failed ({type(exc).__name__}); check the table and column names") from None
    finally:
        engine.dispose()


# ---- the shard store --------------------------------------------------------------------------

@dataclass
class Plan:
    staged: list[str] = field(default_factory=list)
    counts: dict = field(default_factory=lambda: {"seen": 0, "new": 0, "changed": 0, "unchanged": 0, "invalid": 0})
    failures: list[dict] = field(default_factory=list)
    read: list[str] = field(default_factory=list)


class ShardStore:
    """Committed shards of one output folder (see the module docstring)."""

    def __init__(self, out: str | Path, version: str | None = None) -> None:
        self.root = Path(out) / STATE
        self.shards = self.root / "shards"
        self.staging = self.root / "staging"
        self.version = version or nlp_version()

    def committed(self, any_version: bool = False) -> list[Path]:
        if not self.shards.is_dir():
            return []
        out = []
        for d in sorted(self.shards.iterdir()):
            if d.name.startswith(".") or not (d / "shard.json").is_file():
                continue
            if any_version or json.loads((d / "shard.json").read_text())["version"] == self.version:
                out.append(d)
        return out

    def _next_seq(self) -> int:
        seqs = [int(d.name.split("-")[0]) for d in self.committed(any_version=True)]
        return (max(seqs) + 1) if seqs else 1

    def known(self) -> dict[str, bytes]:
        """note_id -> content hash (raw digest) of its newest committed shard (current version)."""
        known: dict[str, bytes] = {}
        for d in self.committed():
            meta = pq.read_table(d / "notes.parquet", columns=["note_id", "content_hash"])
            known.update(zip(meta.column("note_id").to_pylist(), map(bytes.fromhex, meta.column("content_hash").to_pylist())))
        return known

    def clean_interrupted(self) -> None:
        """Remove what a killed run left: temporary shard folders and staged files."""
        if self.shards.is_dir():
            for d in self.shards.iterdir():
                if d.name.startswith("."):
                    shutil.rmtree(d, ignore_errors=True)
        if self.staging.is_dir():
            shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.root / "aggregate", ignore_errors=True)

    def plan(self, sources: list[Source], columns: dict, shard_size: int = DEFAULT_SHARD_SIZE) -> Plan:
        """Stream every source, stage new and changed notes into shards of ``shard_size``."""
        self.clean_interrupted()
        self.staging.mkdir(parents=True, exist_ok=True)
        known = self.known()
        plan = Plan(read=[s.describe() for s in sources])
        seen: dict[str, bytes] = {}  # note_id -> raw digest, for ids repeated within this run
        buffer: list[pd.DataFrame] = []
        buffered = 0
        seq = self._next_seq()

        def flush() -> None:
            nonlocal buffer, buffered, seq
            if not buffered:
                return
            frame = pd.concat(buffer, ignore_index=True)
            digest = hashlib.sha256("".join(sorted(frame["content_hash"])).encode()).hexdigest()[:12]
            path = self.staging / f"{seq:06d}-{digest}.parquet"
            write_parquet(frame, STAGED, path)
            plan.staged.append(str(path))
            seq += 1
            buffer, buffered = [], 0

        for batch in iter_notes(sources, columns, max(shard_size, 1), plan.failures):
            valid, invalid = validate_notes(batch)
            plan.counts["invalid"] += len(invalid)
            plan.failures.extend(invalid)
            if valid.empty:
                continue
            ids, patients = valid["note_id"].tolist(), valid["patient_id"].tolist()
            hashes = list(map(note_digest, ids, patients, valid["note_date"].tolist(), valid["note_type"].tolist(),
                              valid["text"].tolist()))
            valid = valid.assign(content_hash=[h.hex() for h in hashes])
            keep = []
            for i, (note_id, h) in enumerate(zip(ids, hashes)):
                plan.counts["seen"] += 1
                if note_id in seen:  # the same id again in this run
                    if seen[note_id] != h:
                        plan.failures.append({"note_id": note_id, "patient_id": patients[i], "stage": "input",
                                              "error": "duplicate note_id with different text; keep one copy or give each note its own id"})
                    continue
                seen[note_id] = h
                if known.get(note_id) == h:
                    plan.counts["unchanged"] += 1
                    continue
                plan.counts["changed" if note_id in known else "new"] += 1
                keep.append(i)
            if keep:
                part = valid.iloc[keep]
                buffer.append(part)
                buffered += len(part)
                while buffered >= shard_size:
                    frame = pd.concat(buffer, ignore_index=True)
                    buffer, buffered = [frame.iloc[:shard_size]], shard_size
                    rest = frame.iloc[shard_size:]
                    flush()
                    if len(rest):
                        buffer, buffered = [rest], len(rest)
        flush()
        return plan

    def commit(self, staged: str | Path, tables: dict[str, pd.DataFrame], n_failed: int) -> Path:
        """Write a processed shard atomically (temporary folder, then one rename)."""
        staged = Path(staged)
        name = staged.stem
        self.shards.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.shards))
        for table, (frame, arrow_schema) in tables.items():
            write_parquet(frame, arrow_schema, tmp / f"{table}.parquet")
        (tmp / "shard.json").write_text(json.dumps({"version": self.version, "notes": int(len(tables["notes"][0])),
                                                    "failed": n_failed, "committed_at": time.time()}))
        final = self.shards / name
        if final.exists():  # the same shard content committed before: keep one copy
            shutil.rmtree(tmp)
        else:
            os.rename(tmp, final)
        staged.unlink(missing_ok=True)
        return final

    def remove_stale(self) -> int:
        current = set(self.committed())
        stale = [d for d in self.committed(any_version=True) if d not in current]
        for d in stale:
            shutil.rmtree(d, ignore_errors=True)
        return len(stale)


STAGED = pa.schema(list(schema.NOTES) + [pa.field("content_hash", pa.string())])
RAW_LABS = pa.schema([f for f in schema.LABS if f.name not in ("value_std", "unit_std", "unit_inferred", "plausible")])


def process_shard(staged: str, out: str, version: str) -> dict:
    """Worker side: NLP over one staged shard, rows written as a committed shard. Returns counts
    only (no note text). The spaCy pipeline is built once per worker process."""
    from pipeline.process import default_nlp
    from pipeline.tables import run_nlp

    store = ShardStore(out, version)
    notes = pd.read_parquet(staged)
    rows = run_nlp(default_nlp(), notes)
    tables = {
        "notes": (notes, STAGED),
        "mentions": (pd.DataFrame(rows.mentions, columns=schema.MENTIONS.names), schema.MENTIONS),
        "labs": (pd.DataFrame(rows.labs, columns=RAW_LABS.names), RAW_LABS),
        "conditions": (pd.DataFrame(rows.conditions, columns=schema.CONDITIONS.names), schema.CONDITIONS),
        "failures": (pd.DataFrame(rows.failures, columns=schema.FAILURES.names), schema.FAILURES),
    }
    path = store.commit(staged, tables, len(rows.failures))
    return {"shard": path.name, "notes": rows.notes_done, "failed": len(rows.failures),
            "with_mentions": rows.notes_with_mentions}


# ---- aggregation: bounded memory, one bucket of patients at a time -----------------------------
#
# 1. Owners: for each committed shard, which of its notes no later shard supersedes (8 bytes of
#    hash per note; exact ids compared only where hashes repeat).
# 2. One pass over the shards in sequence order: the manifest (and notes.parquet for the report)
#    streamed to their files; every row of notes / mentions / labs / conditions appended to the
#    spool of its patient's bucket (a stable hash of patient_id into B buckets, B from the row
#    counts so that a bucket holds at most ``bucket_rows`` rows), tagged with its position in
#    shard order.
# 3. Each bucket on its own through ``pipeline.process.assemble`` (all it computes is per patient
#    or per note); its output rows spooled, still tagged.
# 4. The buckets' outputs merged back into the order a whole-run aggregation gives (shard order;
#    derived labs by note id; structured labs in file order; cases by patient id) and streamed
#    into temporary files that replace the result files once all are written.

BUCKET_ROWS = 100_000  # notes + mentions + labs + conditions rows one bucket may hold in memory
MAX_BUCKETS = 200  # open spool files stay well under the usual limit of open files
ROW_GROUP = 32_768
ROW_GROUP_BYTES = 4 << 20  # ... or fewer rows: a case row with its reasons, evidence and review cells is a few KB
_POS = "_pos"
_NOTE_KEYS = pa.schema([("note_id", pa.string()), ("patient_id", pa.string())])


def _hash64(values) -> np.ndarray:
    """A stable 64-bit hash of each string (pandas' SipHash with its fixed key)."""
    arr = np.asarray(values, dtype=object)
    return pd.util.hash_array(arr, categorize=False) if len(arr) else np.zeros(0, dtype=np.uint64)


def _column_values(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False)


def superseded(shards: list[Path]) -> tuple[list[set], list[int]]:
    """For each shard (sequence order), the note ids a later shard holds again (their rows here
    are out of date), and the number of notes it keeps."""
    hashes = [_hash64(_column_values(pq.read_table(d / "notes.parquet", columns=["note_id"]), "note_id")) for d in shards]
    drops: list[set] = [set() for _ in shards]
    if not hashes:
        return drops, []
    values, counts = np.unique(np.concatenate(hashes), return_counts=True)
    repeated = values[counts > 1]
    if len(repeated):  # exact ids only where a hash repeats: changed notes (and hash collisions)
        candidates: dict[int, list[str]] = {}
        last: dict[str, int] = {}
        for i, (d, h) in enumerate(zip(shards, hashes)):
            rows = np.flatnonzero(np.isin(h, repeated))
            if len(rows):
                ids = _column_values(pq.read_table(d / "notes.parquet", columns=["note_id"]), "note_id")
                candidates[i] = [ids[r] for r in rows]
                last.update((note_id, i) for note_id in candidates[i])
        for i, ids in candidates.items():
            drops[i] = {note_id for note_id in ids if last[note_id] != i}
    return drops, [len(h) - len(drop) for h, drop in zip(hashes, drops)]


def _keep(table: pa.Table, drop: set) -> pa.Table:
    """Rows of notes this shard still owns (rows without a note id never belong to a note)."""
    ids = table.column("note_id")
    if not drop and ids.null_count == 0:
        return table
    mask = pc.is_valid(ids)
    if drop:
        mask = pc.and_(mask, pc.invert(pc.is_in(ids, value_set=pa.array(sorted(drop), pa.string()))))
    return table.filter(mask)


def _plain(table: pa.Table, arrow_schema: pa.Schema) -> pa.Table:
    """``table``'s columns under ``arrow_schema`` (same names and types, no pandas metadata)."""
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in arrow_schema], schema=arrow_schema)


def _with_pos(arrow_schema: pa.Schema) -> pa.Schema:
    return pa.schema(list(arrow_schema.remove_metadata()) + [pa.field(_POS, pa.int64())])


SPOOL_BATCH_ROWS = 1024  # at most this many rows per spooled batch ...
SPOOL_BATCH_BYTES = 1 << 20  # ... and about this many bytes (a case row with its reasons, evidence and review
#                              cells is a few KB): merging k buckets holds k batches at a time


class _Spool:
    """Tables appended now, read back later in the same order: in memory when the whole run is one
    bucket, else an Arrow IPC stream file (no footer, so appending costs no memory)."""

    def __init__(self, arrow_schema: pa.Schema, path: Path | None) -> None:
        self.schema, self.path = arrow_schema, path
        self.parts: list[pa.Table] = []
        self.writer = None
        self.rows = 0

    def append(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        self.rows += table.num_rows
        table = _plain(table, self.schema)
        if self.path is None:
            self.parts.append(table)
            return
        if self.writer is None:
            if self.path.exists():
                raise RuntimeError("a spool file cannot be appended to once closed")
            self.writer = pa.ipc.new_stream(pa.OSFile(str(self.path), "wb"), self.schema)
        # small batches: merging k buckets' outputs then holds k batches, not k whole buckets
        per_row = max(1, table.nbytes // table.num_rows)
        self.writer.write_table(table, max_chunksize=max(16, min(SPOOL_BATCH_ROWS, SPOOL_BATCH_BYTES // per_row)))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def batches(self) -> Iterator[pa.Table]:
        self.close()
        if self.path is None:
            yield from self.parts
        elif self.path.exists():
            with pa.OSFile(str(self.path), "rb") as fh:
                for batch in pa.ipc.open_stream(fh):
                    yield pa.Table.from_batches([batch], self.schema)

    def read(self) -> pa.Table:
        parts = list(self.batches())
        return pa.concat_tables(parts) if parts else self.schema.empty_table()

    def discard(self) -> None:
        self.close()
        self.parts = []
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def merge_sorted(sources: list[Iterator[pa.Table]], key: str) -> Iterator[pa.Table]:
    """Merge tables each sorted by ``key`` (no key in two sources) into one sorted stream, a
    chunk at a time: all rows up to the smallest last key among the sources' current tables."""
    sources = [iter(s) for s in sources]
    if len(sources) == 1:
        yield from sources[0]
        return
    heads: dict[int, pa.Table] = {}

    def refill(i: int) -> None:
        for table in sources[i]:
            if table.num_rows:
                heads[i] = table
                return
        heads.pop(i, None)

    for i in range(len(sources)):
        refill(i)
    while heads:
        bound = min(heads[i].column(key)[-1].as_py() for i in heads)
        parts = []
        for i in sorted(heads):
            table = heads[i]
            n = pc.sum(pc.less_equal(table.column(key), pa.scalar(bound, table.schema.field(key).type))).as_py() or 0
            if not n:
                continue
            parts.append(table.slice(0, n))
            if n == table.num_rows:
                refill(i)
            else:
                heads[i] = table.slice(n)
        chunk = pa.concat_tables(parts)
        if len(parts) > 1:
            chunk = chunk.take(pc.sort_indices(chunk, sort_keys=[(key, "ascending")]))  # a stable sort
        yield chunk


class _Output:
    """One result file written in pieces into a private temporary file, moved into place by
    ``commit``: a killed run leaves the previous file (or none), never a partial one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o600)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


class _ParquetOutput(_Output):
    def __init__(self, path: Path, arrow_schema: pa.Schema) -> None:
        super().__init__(path)
        # the schema (with its pandas metadata) write_parquet gives the same table
        self.schema = schema.to_arrow(schema.empty(arrow_schema), arrow_schema).schema
        self.writer = pq.ParquetWriter(str(self.tmp), self.schema)
        self.pending: list[pa.Table] = []
        self.buffered = 0
        self.buffered_bytes = 0
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        table = pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in self.schema], schema=self.schema)
        self.pending.append(table)
        self.buffered += table.num_rows
        self.buffered_bytes += table.nbytes
        self.rows += table.num_rows
        if self.buffered >= ROW_GROUP or self.buffered_bytes >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
            self.pending, self.buffered, self.buffered_bytes = [], 0, 0

    def commit(self) -> None:
        self.flush()
        self.writer.close()
        super().commit()

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            super().abort()


class _ReviewOutput(_Output):
    """review.csv as ``pipeline.review.review_csv_bytes`` writes it, a row at a time."""

    def __init__(self, path: Path) -> None:
        import csv

        super().__init__(path)
        self.fh = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in commit/abort
        self.fh.write("\ufeff")
        self.writer = csv.writer(self.fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        self.writer.writerow(list(REVIEW_COLUMNS))

    def write(self, table: pa.Table, columns: list[str]) -> None:
        self.writer.writerows(zip(*(table.column(c).to_pylist() for c in columns)))

    def commit(self) -> None:
        self.fh.close()
        super().commit()

    def abort(self) -> None:
        self.fh.close()
        super().abort()


def write_manifest_part(out: _ParquetOutput, notes: pa.Table, shard: str, version: str) -> None:
    """The run manifest: each note's id, content hash, shard and NLP version (no text)."""
    n = notes.num_rows
    out.write(pa.table({"note_id": notes.column("note_id"), "patient_id": notes.column("patient_id"),
                        "content_hash": notes.column("content_hash"), "shard": pa.array([shard] * n, pa.string()),
                        "version": pa.array([version] * n, pa.string())}))


MANIFEST = pa.schema([("note_id", pa.string()), ("patient_id", pa.string()), ("content_hash", pa.string()),
                      ("shard", pa.string()), ("version", pa.string())])


REPORT_TEXT_LIMIT = 50_000  # notes whose text the HTML report embeds; above this it links table rows

_ROW_TABLES = {"mentions": schema.MENTIONS, "labs": RAW_LABS, "conditions": schema.CONDITIONS}
_REVIEW_COLS = [f"_review_{c}" for c in REVIEW_COLUMNS]  # review.csv's cells (safe_cell applied), kept with each case
_CASES_REVIEW = pa.schema(list(schema.CASES.remove_metadata()) + [pa.field(c, pa.string()) for c in _REVIEW_COLS])


def _buckets_for(shards: list[Path], extra_rows: int, bucket_rows: int) -> int:
    rows = extra_rows
    for d in shards:
        for table in ("notes", *_ROW_TABLES):
            rows += pq.read_metadata(d / f"{table}.parquet").num_rows
    return max(1, min(MAX_BUCKETS, -(-rows // max(bucket_rows, 1))))


def _bucket_of(patient_ids, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros(len(patient_ids), dtype=np.int64)
    values = np.asarray(patient_ids, dtype=object)
    values = np.where(pd.isna(values), "", values)
    return (_hash64(values) % np.uint64(n)).astype(np.int64)


def _split(table: pa.Table, buckets: np.ndarray, n: int) -> Iterator[tuple[int, pa.Table]]:
    if n == 1:
        yield 0, table
        return
    order = np.argsort(buckets, kind="stable")
    bounds = np.searchsorted(buckets[order], np.arange(n + 1))
    for b in range(n):
        if bounds[b + 1] > bounds[b]:
            yield b, table.take(pa.array(order[bounds[b]:bounds[b + 1]]))


def _to_frame(table: pa.Table, arrow_schema: pa.Schema) -> pd.DataFrame:
    """A spooled table as the DataFrame reading the shard's parquet gives (schema dtypes)."""
    if not table.num_rows:
        return schema.empty(arrow_schema)
    return schema.conform(table.select(arrow_schema.names).to_pandas(), arrow_schema)


@functools.lru_cache(maxsize=4)
def _worker_classifier(model: str | None):
    from pipeline.train import load_classifier

    return load_classifier(model)


def classify_bucket(inputs: dict[str, _Spool], results: dict[str, _Spool], classifier=None) -> dict | None:
    """One bucket of patients: its spooled rows through ``pipeline.process.assemble``, the output
    rows spooled with their sort keys; returns the bucket's counts. ``classifier`` may be the
    model argument (a path or None) when this runs in a worker process."""
    from pipeline.process import assemble
    from pipeline.review import review_columns, safe_cell
    from pipeline.tables import RowSet

    if classifier is None or isinstance(classifier, str):
        classifier = _worker_classifier(classifier)
    notes = _to_frame(inputs["notes"].read(), _NOTE_KEYS)
    frames, pos = {}, {}
    for name, s in _ROW_TABLES.items():
        table = inputs[name].read()
        pos[name] = table.column(_POS)
        frames[name] = _to_frame(table, s)
    structured = inputs["structured"].read()
    extra = _to_frame(structured, schema.LABS) if structured.num_rows else None
    for spool in inputs.values():
        spool.discard()
    if not len(notes) and not len(frames["labs"]) and extra is None:
        return None  # nothing of this bucket reaches any table
    rows = RowSet(mentions=frames["mentions"], labs=frames["labs"], conditions=frames["conditions"], failures=[])
    rows.notes_done = int(len(notes))
    rows.notes_with_mentions = int(frames["mentions"]["note_id"].nunique()) if len(frames["mentions"]) else 0
    tables = assemble(notes, rows, classifier, extra)
    for name in ("mentions", "conditions"):  # the same rows in the same order, mechanism filled in
        results[name].append(schema.to_arrow(getattr(tables, name), _ROW_TABLES[name]).append_column(_POS, pos[name]))
    # labs: the text rows (same order), then derived rows (by note id), then structured rows
    n_text, n_extra = len(frames["labs"]), (structured.num_rows if extra is not None else 0)
    labs = schema.to_arrow(tables.labs, schema.LABS)
    results["labs"].append(labs.slice(0, n_text).append_column(_POS, pos["labs"]))
    results["derived"].append(labs.slice(n_text, labs.num_rows - n_text - n_extra))
    if n_extra:
        results["structured"].append(labs.slice(labs.num_rows - n_extra).append_column(_POS, structured.column(_POS)))
    review = review_columns(tables.cases, tables.mentions, tables.labs)  # one entry per case, same order
    cases = schema.to_arrow(tables.cases, schema.CASES)
    for col, name in zip(_REVIEW_COLS, REVIEW_COLUMNS):
        cases = cases.append_column(col, pa.array([safe_cell(v) for v in review[name]], pa.string()))
    results["cases"].append(cases)
    for spool in results.values():
        spool.close()  # one append per bucket: the file is complete, no descriptor kept open
    counts = tables.counts
    del tables, frames, notes, rows, review, cases, labs
    _release_memory()
    return counts


def _release_memory() -> None:
    """Hand what a finished bucket freed back to the system (Arrow's pool and the C heap keep it
    otherwise, and the next bucket's allocations land beside it: peak memory would creep up with
    the number of buckets)."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)  # glibc only
    except (OSError, AttributeError):
        pass


def aggregate_run(out: str, version: str, plan: dict, model: str | None, labs: str | None, report: bool, timings: dict,
                  bucket_rows: int = BUCKET_ROWS, buckets: int | None = None, pool=None) -> dict:
    """Committed shards -> tables -> cases -> result folder, manifest; stale shards removed.

    Memory is bounded by ``bucket_rows`` (the bucket size), not by the archive: see the section
    comment above. ``buckets`` forces the number of buckets (tests compare 1 with many); ``pool``
    (a concurrent.futures executor of worker processes) classifies buckets in parallel."""
    from pipeline.process import classify_inputs
    from pipeline.runner import OUTPUT_FILES, Timer, failure_records, write_run_info

    t = Timer()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ShardStore(out, version)
    shards = store.committed()
    classifier, extra_labs, problems = classify_inputs(model, labs)
    drops, kept = superseded(shards)
    n_notes = sum(kept)
    n_buckets = buckets or _buckets_for(shards, len(extra_labs) if extra_labs is not None else 0, bucket_rows)

    work = store.root / "aggregate"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ours = (*OUTPUT_FILES.values(), "notes.parquet", "manifest.parquet", "review.csv")
    for stale in out_dir.glob(".*.tmp"):  # result files a killed aggregation was writing
        if any(stale.name.startswith(f".{name}.") for name in ours):
            stale.unlink(missing_ok=True)

    def spools(name: str, arrow_schema: pa.Schema) -> list[_Spool]:
        return [_Spool(arrow_schema, None if n_buckets == 1 else work / f"{name}-{b:04d}.arrow") for b in range(n_buckets)]

    outputs: dict[str, _Output] = {}
    try:
        with_text = report and 0 < n_notes <= REPORT_TEXT_LIMIT
        outputs["manifest"] = _ParquetOutput(out_dir / "manifest.parquet", MANIFEST)
        if with_text:
            outputs["notes"] = _ParquetOutput(out_dir / "notes.parquet", schema.NOTES)

        # -- 2. one pass over the shards: manifest, notes, rows into their patient's bucket --------
        inputs = {"notes": spools("in-notes", _NOTE_KEYS)}
        inputs |= {name: spools(f"in-{name}", _with_pos(s)) for name, s in _ROW_TABLES.items()}
        failures = list(plan["failures"])
        for i, (d, drop) in enumerate(zip(shards, drops)):
            cols = STAGED.names if with_text else ["note_id", "patient_id", "content_hash"]
            notes = _keep(pq.read_table(d / "notes.parquet", columns=cols), drop)
            write_manifest_part(outputs["manifest"], notes, d.name, store.version)
            if with_text:
                outputs["notes"].write(notes)
            for b, part in _split(notes, _bucket_of(_column_values(notes, "patient_id"), n_buckets), n_buckets):
                inputs["notes"][b].append(part)
            for name in _ROW_TABLES:
                table = pq.read_table(d / f"{name}.parquet")
                table = table.append_column(_POS, pa.array((i << 32) + np.arange(table.num_rows, dtype=np.int64)))
                table = _keep(table, drop)
                for b, part in _split(table, _bucket_of(_column_values(table, "patient_id"), n_buckets), n_buckets):
                    inputs[name][b].append(part)
            fail = _keep(pq.read_table(d / "failures.parquet"), drop)
            if fail.num_rows:
                failures.extend(failure_records(_to_frame(fail, schema.FAILURES)))
            del notes, table, fail
        failures.extend(problems)
        labs_pos = _with_pos(schema.LABS)
        inputs["structured"] = spools("in-structured", labs_pos)
        if extra_labs is not None and len(extra_labs):
            table = schema.to_arrow(extra_labs, schema.LABS)
            table = table.append_column(_POS, pa.array(np.arange(table.num_rows, dtype=np.int64)))
            for b, part in _split(table, _bucket_of(extra_labs["patient_id"].astype(object).to_numpy(), n_buckets), n_buckets):
                inputs["structured"][b].append(part)
            del table
        for spool in inputs.values():
            for s in spool:
                s.close()

        phases = {"partition": time.perf_counter()}
        # -- 3. each bucket on its own (in the pool's worker processes when one is given) --------------
        results = {"mentions": spools("out-mentions", _with_pos(schema.MENTIONS)),
                   "conditions": spools("out-conditions", _with_pos(schema.CONDITIONS)),
                   "labs": spools("out-labs", labs_pos), "derived": spools("out-derived", schema.LABS.remove_metadata()),
                   "structured": spools("out-structured", labs_pos), "cases": spools("out-cases", _CASES_REVIEW)}
        jobs = [({k: v[b] for k, v in inputs.items()}, {k: v[b] for k, v in results.items()}) for b in range(n_buckets)]
        if pool is not None and n_buckets > 1:
            done = list(pool.map(classify_bucket, *zip(*jobs), [model] * n_buckets))
        else:
            done = [classify_bucket(ins, outs, classifier) for ins, outs in jobs]
        counts: dict = {}
        labels: dict[str, int] = {}
        for bucket_counts in filter(None, done):
            for key, value in bucket_counts.items():
                if key == "cases_by_label":
                    for label, n in value.items():
                        labels[label] = labels.get(label, 0) + n
                else:
                    counts[key] = counts.get(key, 0) + value

        phases["classify"] = time.perf_counter()
        # -- 4. merged back into whole-run order, streamed into the result files ----------------------
        for name in ("mentions", "labs", "conditions", "cases"):
            outputs[name] = _ParquetOutput(out_dir / OUTPUT_FILES[name], schema.TABLES[name])
        outputs["review"] = _ReviewOutput(out_dir / "review.csv")
        for name in ("mentions", "conditions"):
            for chunk in merge_sorted([s.batches() for s in results[name]], _POS):
                outputs[name].write(chunk)
            outputs[name].flush()  # nothing of a finished table stays buffered while the next is merged
        for part, key in (("labs", _POS), ("derived", "note_id"), ("structured", _POS)):
            for chunk in merge_sorted([s.batches() for s in results[part]], key):
                outputs["labs"].write(chunk)
        outputs["labs"].flush()
        for chunk in merge_sorted([s.batches() for s in results["cases"]], "patient_id"):
            outputs["cases"].write(chunk)
            outputs["review"].write(chunk, _REVIEW_COLS)
        for spool in results.values():
            for s in spool:
                s.discard()
        failures = failure_records(schema.conform(pd.DataFrame(failures, columns=schema.FAILURES.names), schema.FAILURES))
        counts = {
            "notes": n_notes, "patients": counts.get("patients", 0), "notes_processed": n_notes,
            "notes_with_calcification": counts.get("notes_with_calcification", 0),
            "mentions": outputs["mentions"].rows, "labs": outputs["labs"].rows, "conditions": outputs["conditions"].rows,
            "cases_by_label": dict(sorted(labels.items())), "notes_failed": len(failures),
        }
        paths = {}
        for name in ("mentions", "labs", "conditions", "cases", "notes", "review", "manifest"):
            if name in outputs:
                outputs.pop(name).commit()
                if name != "manifest":
                    paths[name] = str(out_dir / ("review.csv" if name == "review" else OUTPUT_FILES.get(name, f"{name}.parquet")))
    finally:
        for o in outputs.values():
            o.abort()
        shutil.rmtree(work, ignore_errors=True)
    phases["write"] = time.perf_counter()
    t.mark("aggregate")
    manifest = write_run_info(
        out_dir,
        {"inputs": plan["read"], "model": classifier.model.version if hasattr(classifier, "model") else str(model),
         "nlp_version": version, "incremental": plan["counts"], "timings": timings | t.marks,
         "manifest": str(out_dir / "manifest.parquet")},
        counts, paths, failures, report,
    )
    store.remove_stale()
    phases = {k: round(v - start, 3) for k, v, start in zip(phases, phases.values(), [t.t0, *phases.values()])}
    return {"counts": manifest["counts"], "outputs": manifest["outputs"], "incremental": plan["counts"],
            "buckets": n_buckets, "phases": phases}
