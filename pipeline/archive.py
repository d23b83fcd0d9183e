"""Archive-scale runs: stream notes from sources, shard, process shards in worker processes,
commit each shard atomically, and aggregate -- incrementally and safe to kill at any point.

Layout of the state kept in the output folder (``OUT/.calcmine/``)::

    shards/<seq>-<digest>/    one committed shard: notes.parquet (ids, hashes, text),
                              mentions / labs / conditions / failures .parquet, shard.json
    staging/<seq>-<digest>.parquet   notes waiting to be processed (deleted once committed)

How a run stays correct:

- Every note gets a content hash (id, patient, date, type, text). A note whose id and hash are
  already in a committed shard made with the same NLP version is not processed again.
- A shard is written into a temporary folder and renamed into ``shards/`` in one step, so a
  shard is either complete or absent; a killed run leaves at most temporary folders and staged
  files, which the next run removes and redoes.
- Aggregation reads committed shards in sequence order and keeps, for each note id, the rows of
  the newest shard holding it: a changed note supersedes its old rows, nothing is counted twice.
- The NLP version is calcmine's version plus a hash of every rule file; shards made with another
  version are ignored (their notes are reprocessed) and removed after a successful run. The case
  classifier only affects aggregation, which is always redone.
"""

from __future__ import annotations

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

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.errors import InputError
from pipeline.io import _read_txt_notes, _rename, read_chunks, validate_notes, write_parquet

STATE = ".calcmine"
DEFAULT_SHARD_SIZE = 2000


# ---- versions and hashes ---------------------------------------------------------------------

def ruleset_hash() -> str:
    """SHA-256 over every rule file shipped in ``pipeline/data`` (names and contents)."""
    digest = hashlib.sha256()
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


def note_hash(note_id: str, patient_id: str, note_date, note_type, text: str) -> str:
    parts = [note_id, patient_id, note_date or "", note_type or "", text]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


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

    def known(self) -> dict[str, str]:
        """note_id -> content hash of its newest committed shard (current version)."""
        known: dict[str, str] = {}
        for d in self.committed():
            meta = pq.read_table(d / "notes.parquet", columns=["note_id", "content_hash"])
            known.update(zip(meta.column("note_id").to_pylist(), meta.column("content_hash").to_pylist()))
        return known

    def clean_interrupted(self) -> None:
        """Remove what a killed run left: temporary shard folders and staged files."""
        if self.shards.is_dir():
            for d in self.shards.iterdir():
                if d.name.startswith("."):
                    shutil.rmtree(d, ignore_errors=True)
        if self.staging.is_dir():
            shutil.rmtree(self.staging, ignore_errors=True)

    def plan(self, sources: list[Source], columns: dict, shard_size: int = DEFAULT_SHARD_SIZE) -> Plan:
        """Stream every source, stage new and changed notes into shards of ``shard_size``."""
        self.clean_interrupted()
        self.staging.mkdir(parents=True, exist_ok=True)
        known = self.known()
        plan = Plan(read=[s.describe() for s in sources])
        seen: dict[str, str] = {}
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
            hashes = [note_hash(*row) for row in valid[["note_id", "patient_id", "note_date", "note_type", "text"]].itertuples(index=False)]
            valid = valid.assign(content_hash=hashes)
            keep = []
            for i, (note_id, h) in enumerate(zip(valid["note_id"], hashes)):
                plan.counts["seen"] += 1
                if note_id in seen:  # the same id again in this run
                    if seen[note_id] != h:
                        plan.failures.append({"note_id": note_id, "patient_id": valid["patient_id"].iat[i], "stage": "input",
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


def gather(out: str | Path, version: str | None = None):
    """Rows of every note from its newest committed shard: (notes, RowSet-like dict of frames)."""
    store = ShardStore(out, version)
    shards = store.committed()
    owner: dict[str, str] = {}
    for d in shards:  # sequence order: later shards win
        ids = pq.read_table(d / "notes.parquet", columns=["note_id"]).column("note_id").to_pylist()
        owner.update((i, d.name) for i in ids)
    frames: dict[str, list[pd.DataFrame]] = {k: [] for k in ("notes", "mentions", "labs", "conditions", "failures")}
    for d in shards:
        for table in frames:
            cols = [c for c in STAGED.names if c != "text"] if table == "notes" else None
            frame = pd.read_parquet(d / f"{table}.parquet", columns=cols)
            frame = frame[frame["note_id"].map(owner.get) == d.name]  # a changed note's old rows drop out
            frames[table].append(frame)
    empty = {"notes": [c for c in STAGED.names if c != "text"], "mentions": schema.MENTIONS.names, "labs": RAW_LABS.names,
             "conditions": schema.CONDITIONS.names, "failures": schema.FAILURES.names}
    out_frames = {k: (pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=empty[k])) for k, v in frames.items()}
    return store, out_frames


def write_manifest(store: ShardStore, path: Path) -> None:
    """The run manifest: each note's id, content hash, shard and NLP version (no text)."""
    frames = []
    for d in store.committed():
        meta = pd.read_parquet(d / "notes.parquet", columns=["note_id", "patient_id", "content_hash"])
        meta["shard"] = d.name
        frames.append(meta)
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["note_id", "patient_id", "content_hash", "shard"])
    manifest = manifest.drop_duplicates("note_id", keep="last")
    manifest["version"] = store.version
    write_parquet(manifest, MANIFEST, path)


MANIFEST = pa.schema([("note_id", pa.string()), ("patient_id", pa.string()), ("content_hash", pa.string()),
                      ("shard", pa.string()), ("version", pa.string())])


REPORT_TEXT_LIMIT = 50_000  # notes whose text the HTML report embeds; above this it links table rows


def aggregate_run(out: str, version: str, plan: dict, model: str | None, labs: str | None, report: bool, timings: dict) -> dict:
    """Committed shards -> tables -> cases -> result folder, manifest; stale shards removed."""
    from pipeline.process import classify_run
    from pipeline.runner import Timer, write_results
    from pipeline.tables import RowSet

    t = Timer()
    store, frames = gather(out, version)
    notes = frames["notes"]
    rows = RowSet(  # DataFrames straight from the shards: assemble takes them as they are
        mentions=frames["mentions"],
        labs=frames["labs"],
        conditions=frames["conditions"],
        failures=plan["failures"] + frames["failures"].astype(object).where(frames["failures"].notna(), None).to_dict("records"),
    )
    rows.notes_done = int(len(notes))
    rows.notes_with_mentions = int(frames["mentions"]["note_id"].nunique()) if len(frames["mentions"]) else 0
    tables, classifier = classify_run(notes, rows, model, labs)
    t.mark("aggregate")
    with_text = None
    if report and 0 < len(notes) <= REPORT_TEXT_LIMIT:
        with_text = pd.concat([pd.read_parquet(d / "notes.parquet", columns=["note_id", "text"]) for d in store.committed()])
        with_text = with_text.drop_duplicates("note_id", keep="last")
        with_text = notes.merge(with_text, on="note_id", how="left")
    manifest = write_results(
        tables, Path(out),
        {"inputs": plan["read"], "model": classifier.model.version if hasattr(classifier, "model") else str(model),
         "nlp_version": version, "incremental": plan["counts"], "timings": timings | t.marks,
         "manifest": str(Path(out) / "manifest.parquet")},
        notes=with_text, report=report,
    )
    write_manifest(store, Path(out) / "manifest.parquet")
    store.remove_stale()
    return {"counts": manifest["counts"], "outputs": manifest["outputs"], "incremental": plan["counts"]}
