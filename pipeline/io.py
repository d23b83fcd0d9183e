"""Reading note archives and writing result folders.

Inputs: CSV, Parquet, JSONL files, or folders holding them and/or ``.txt`` notes
(``<folder>/<patient_id>/<note_id>.txt``, or ``<folder>/<note_id>.txt`` where the note is its own
patient). Problems are reported in one line -- what, where, how to fix -- and never quote note text.
A file that cannot be read stops the run only when it is named directly; inside a folder it is
recorded as a failure and the other files go on.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schema
from pipeline.errors import InputError

REQUIRED = ("note_id", "patient_id", "text")
OPTIONAL = ("note_date", "note_type")
NOTE_SUFFIXES = {".csv", ".parquet", ".pq", ".jsonl", ".ndjson", ".txt"}


def _rename(frame: pd.DataFrame, where: str, id_col: str, patient_col: str, text_col: str) -> pd.DataFrame:
    mapping = {id_col: "note_id", patient_col: "patient_id", text_col: "text"}
    for source, target in mapping.items():
        if source not in frame.columns:
            flag = {"note_id": "--id-col", "patient_id": "--patient-col", "text": "--text-col"}[target]
            found = ", ".join(map(str, list(frame.columns)[:12])) or "none"
            raise InputError(f"{where}: missing column '{source}' (columns found: {found}); name yours with {flag} NAME")
    frame = frame.rename(columns={k: v for k, v in mapping.items() if k != v})
    for col in OPTIONAL:
        if col not in frame.columns:
            frame[col] = None
    return frame[list(REQUIRED) + list(OPTIONAL)]


def read_chunks(path: Path, chunk: int = 100_000) -> Iterator[pd.DataFrame]:
    """A CSV, Parquet or JSONL file as DataFrames of at most ``chunk`` rows (strings kept as text)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            yield from pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8", chunksize=chunk)
        elif suffix in (".parquet", ".pq"):
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
                yield batch.to_pandas()
        elif suffix in (".jsonl", ".ndjson"):
            records: list[dict] = []
            with path.open("r", encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except json.JSONDecodeError:
                        item = None
                    if not isinstance(item, dict):
                        raise InputError(f"{path}:{number}: not a JSON object; each line must be one JSON object")
                    records.append(item)
                    if len(records) >= chunk:
                        yield pd.DataFrame.from_records(records)
                        records = []
            if records:
                yield pd.DataFrame.from_records(records)
        else:
            raise InputError(f"{path}: unsupported file type '{suffix}'; use .csv, .parquet, .jsonl or a folder of .txt notes")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); re-save the file as UTF-8") from None
    except InputError:
        raise
    except (ValueError, OSError, pd.errors.ParserError, pa.ArrowException) as exc:
        kind = {"csv": "CSV", "parquet": "Parquet", "pq": "Parquet"}.get(suffix.lstrip("."), "JSONL")
        raise InputError(f"{path}: cannot be read as {kind} ({type(exc).__name__}); check the file is complete and in that format") from None


def read_table(path: Path) -> pd.DataFrame:
    """A whole CSV, Parquet or JSONL file (see :func:`read_chunks`)."""
    frames = list(read_chunks(path))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _read_txt_notes(root: Path, files: list[Path], failures: list[dict]) -> pd.DataFrame:
    rows = []
    for f in files:
        rel = f.relative_to(root)
        patient = rel.parts[-2] if len(rel.parts) > 1 else f.stem
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            failures.append({"note_id": f.stem, "patient_id": patient, "stage": "read",
                             "error": f"{f}: not UTF-8 text (bad byte at offset {exc.start}); re-save as UTF-8"})
            continue
        rows.append({"note_id": f.stem, "patient_id": patient, "text": text, "note_date": None, "note_type": None})
    return pd.DataFrame(rows, columns=list(REQUIRED) + list(OPTIONAL))


def load_inputs(
    inputs: Iterable[str | Path],
    id_col: str = "note_id",
    patient_col: str = "patient_id",
    text_col: str = "text",
) -> tuple[pd.DataFrame, list[dict], list[dict]]:
    """Read every input; returns (notes, failures, descriptions of what was read)."""
    frames: list[pd.DataFrame] = []
    failures: list[dict] = []
    read: list[dict] = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"input not found: {path}; check the path (files: .csv .parquet .jsonl, or a folder)")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in NOTE_SUFFIXES)
            txt = [p for p in files if p.suffix.lower() == ".txt"]
            tables = [p for p in files if p.suffix.lower() != ".txt"]
            if not files:
                raise InputError(f"{path}: folder holds no .csv, .parquet, .jsonl or .txt notes; point calcmine at your notes")
            for f in tables:
                try:
                    frame = _rename(read_table(f), str(f), id_col, patient_col, text_col)
                except InputError as exc:
                    failures.append({"note_id": None, "patient_id": None, "stage": "read", "error": str(exc)})
                    continue
                frame["source"] = str(f)
                frames.append(frame)
                read.append({"path": str(f), "notes": int(len(frame))})
            if txt:
                frame = _read_txt_notes(path, txt, failures)
                frame["source"] = str(path)
                frames.append(frame)
                read.append({"path": str(path), "notes": int(len(frame)), "kind": "txt folder"})
        else:
            if path.suffix.lower() == ".txt":
                frame = _read_txt_notes(path.parent, [path], failures)
            else:
                frame = _rename(read_table(path), str(path), id_col, patient_col, text_col)
            frame["source"] = str(path)
            frames.append(frame)
            read.append({"path": str(path), "notes": int(len(frame))})
    if not frames:
        notes = pd.DataFrame(columns=schema.NOTES.names)
    else:
        notes = pd.concat(frames, ignore_index=True)
    return notes, failures, read


def _clean_str(value) -> str | None:
    if type(value) is str:  # the common case first
        return value.strip() or None
    if schema.is_missing(value):
        return None
    text = str(value).strip()
    return text or None


def _column(frame: pd.DataFrame, name: str) -> list:
    """A column as a plain list (element-wise access to pandas' Arrow-backed strings is slow)."""
    return frame[name].tolist() if name in frame.columns else [None] * len(frame)


def validate_notes(notes: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Keep notes with an id, a patient and non-empty text; one failure record per other note.

    A note id seen twice keeps its first copy; a second copy with different text is a failure.
    Missing values come back as None (never NaN), so every kept value is a str or None.
    """
    missing = [c for c in REQUIRED if c not in notes.columns]
    if missing:
        raise InputError(f"notes table lacks columns {missing}; it needs note_id, patient_id and text")
    ids = [_clean_str(v) for v in _column(notes, "note_id")]
    patients = [_clean_str(v) for v in _column(notes, "patient_id")]
    texts = _column(notes, "text")
    failures: list[dict] = []
    keep = []
    seen: dict[str, str] = {}
    for i, (note_id, patient, text) in enumerate(zip(ids, patients, texts)):
        problem = None
        if note_id is None:
            problem = f"row {i + 1}: no note_id"
        elif patient is None:
            problem = "no patient_id"
        elif not isinstance(text, str):
            problem = "text is missing or not a string"
        elif not text.strip():
            problem = "empty text"
        elif note_id in seen:
            if seen[note_id] != text:
                problem = "duplicate note_id with different text; keep one copy or give each note its own id"
            else:
                continue
        if problem:
            failures.append({"note_id": note_id, "patient_id": patient, "stage": "input", "error": problem})
            continue
        seen[note_id] = text
        keep.append(i)
    dates, types, sources = _column(notes, "note_date"), _column(notes, "note_type"), _column(notes, "source")
    columns = {
        "note_id": [ids[i] for i in keep],
        "patient_id": [patients[i] for i in keep],
        "note_date": [_date_str(dates[i]) for i in keep],
        "note_type": [_clean_str(types[i]) for i in keep],
        "text": [texts[i] for i in keep],
        "source": [sources[i] if isinstance(sources[i], str) else None for i in keep],
    }
    # object columns: a missing value stays None (pandas' default string dtype would make it NaN)
    valid = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})
    return valid[schema.NOTES.names], failures


def _date_str(value) -> str | None:
    value = _clean_str(value)
    return None if value is None else _iso_date(value)


@functools.lru_cache(maxsize=8192)  # about 20 years of distinct days
def _iso_date(value: str) -> str:
    """A date as YYYY-MM-DD when pandas can read it; otherwise as written."""
    try:
        return pd.Timestamp(value).date().isoformat()
    except (ValueError, TypeError):
        return value


# ----------------------------------------------------------------------------------------------
# writing

def write_private(path: Path, data: bytes) -> None:
    """Write atomically (temp file + rename), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_parquet(frame: pd.DataFrame, arrow_schema, path: Path) -> None:
    import io as _io

    buf = _io.BytesIO()
    pq.write_table(schema.to_arrow(frame, arrow_schema), buf)
    write_private(path, buf.getvalue())


def write_json(obj: dict, path: Path) -> None:
    write_private(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8"))
