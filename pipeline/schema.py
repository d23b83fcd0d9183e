"""Every output table's columns and types, declared once (tests hold the outputs to these)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

NOTES = pa.schema(
    [
        ("note_id", pa.string()),
        ("patient_id", pa.string()),
        ("note_date", pa.string()),
        ("note_type", pa.string()),
        ("text", pa.string()),
        ("source", pa.string()),
    ]
)

MENTIONS = pa.schema(
    [
        ("note_id", pa.string()),
        ("patient_id", pa.string()),
        ("note_date", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
        ("concept", pa.string()),
        ("site", pa.string()),
        ("sites", pa.string()),  # all linked sites, ";"-separated
        ("laterality", pa.string()),
        ("assertion", pa.string()),
        ("section", pa.string()),
        ("sentence", pa.string()),
        ("sentence_start", pa.int64()),
        ("triggers", pa.string()),
        ("mechanism", pa.string()),
    ]
)

LABS = pa.schema(
    [
        ("note_id", pa.string()),
        ("patient_id", pa.string()),
        ("note_date", pa.string()),
        ("analyte", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("comparator", pa.string()),
        ("value_std", pa.float64()),
        ("unit_std", pa.string()),
        ("unit_inferred", pa.bool_()),
        ("plausible", pa.bool_()),
        ("flag", pa.string()),
        ("source", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
    ]
)

CONDITIONS = pa.schema(
    [
        ("note_id", pa.string()),
        ("patient_id", pa.string()),
        ("note_date", pa.string()),
        ("condition", pa.string()),
        ("group", pa.string()),
        ("detail", pa.string()),
        ("assertion", pa.string()),
        ("section", pa.string()),
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("text", pa.string()),
    ]
)

CASES = pa.schema(
    [
        ("patient_id", pa.string()),
        ("label", pa.string()),
        ("confidence", pa.float64()),
        ("score", pa.float64()),
        ("reasons", pa.string()),  # ranked, " | "-separated, readable
        ("evidence", pa.string()),  # JSON list of {note_id, start, end, kind, reason}
        ("n_notes", pa.int64()),
        ("n_mentions", pa.int64()),
        ("n_present", pa.int64()),
        ("model", pa.string()),
    ]
)

FAILURES = pa.schema(
    [
        ("note_id", pa.string()),
        ("patient_id", pa.string()),
        ("stage", pa.string()),
        ("error", pa.string()),
    ]
)

TABLES = {
    "mentions": MENTIONS,
    "labs": LABS,
    "conditions": CONDITIONS,
    "cases": CASES,
}


def empty(schema: pa.Schema) -> pd.DataFrame:
    return conform(pd.DataFrame(columns=schema.names), schema)


_PANDAS_TYPES = {
    pa.string(): "string",
    pa.int64(): "Int64",
    pa.float64(): "float64",
    pa.bool_(): "boolean",
}


def conform(frame: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """Columns in schema order with schema types; a missing or extra column is a bug."""
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise ValueError(f"table is missing columns {missing}")
    frame = frame[list(schema.names)].copy()
    for field in schema:
        frame[field.name] = frame[field.name].astype(_PANDAS_TYPES[field.type])
    return frame.reset_index(drop=True)


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pandas(conform(frame, schema), schema=schema, preserve_index=False)


def is_missing(value) -> bool:
    """None, pandas' NA or a float NaN: what a table cell holds when it holds nothing."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def records(frame: pd.DataFrame) -> list[dict]:
    """``frame.to_dict("records")`` built from whole columns (``Series.tolist``): the same plain
    Python values, without pandas boxing every cell one by one (the slow part on large tables)."""
    names = list(frame.columns)
    if not names:
        return [{} for _ in range(len(frame))]
    columns = []
    for c in names:
        values = frame[c].tolist()
        if pd.api.types.is_extension_array_dtype(frame[c].dtype):
            values = [None if v is pd.NA else v for v in values]  # as to_dict gives them
        columns.append(values)
    return [dict(zip(names, row)) for row in zip(*columns)]
