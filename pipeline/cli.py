"""The ``calcmine`` command.

    calcmine run [INPUT ...] [--out DIR] [--model PATH] [--id-col C --patient-col C --text-col C]
    calcmine evaluate GOLD_DIR_OR_FILE [--split heldout] [--out DIR]
    calcmine check-rules

Errors are one line on stderr (what, where, how to fix) and a non-zero exit code; never a
traceback, never note text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.errors import CalcmineError, InputError

SAMPLE_ARCHIVE = Path("examples/archive")
EXIT_INPUT = 2
EXIT_INTERNAL = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="calcmine", description="Find calcification in clinical notes; label cases dystrophic or metastatic.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="process note archives into result tables")
    run.add_argument("inputs", nargs="*", help="CSV, Parquet, JSONL files or folders (default: examples/archive)")
    run.add_argument("--out", default="results", help="output folder (default: results)")
    run.add_argument("--model", default=None, help="case classifier: evidence JSON (default: the packaged one)")
    run.add_argument("--id-col", default="note_id")
    run.add_argument("--patient-col", default="patient_id")
    run.add_argument("--text-col", default="text")
    run.add_argument("--no-prefect", action="store_true", help="run in-process without the Prefect flow")

    ev = sub.add_parser("evaluate", help="score the pipeline against a hand-written gold set")
    ev.add_argument("gold", help="a gold folder (mentions/, negation/, labs/, cases/) or one .jsonl file")
    ev.add_argument("--split", default="heldout", choices=["dev", "heldout", "all"])
    ev.add_argument("--out", default=None, help="write the evaluation (JSON + errors) to this folder")

    sub.add_parser("check-rules", help="load and validate every shipped rule file")
    return p


def _preflight(inputs: list[str], id_col: str, patient_col: str, text_col: str) -> None:
    """Cheap checks before starting Prefect: paths exist, named tables have the columns."""
    import pyarrow.parquet as pq

    from pipeline.io import NOTE_SUFFIXES

    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise InputError(f"input not found: {path}; check the path (files: .csv .parquet .jsonl, or a folder)")
        if path.is_dir():
            if not any(p.suffix.lower() in NOTE_SUFFIXES for p in path.rglob("*") if p.is_file()):
                raise InputError(f"{path}: folder holds no .csv, .parquet, .jsonl or .txt notes; point calcmine at your notes")
            continue
        suffix = path.suffix.lower()
        if suffix not in NOTE_SUFFIXES:
            raise InputError(f"{path}: unsupported file type '{suffix}'; use .csv, .parquet, .jsonl or a folder of .txt notes")
        columns: list[str] | None = None
        try:
            if suffix == ".csv":
                with path.open("r", encoding="utf-8", newline="") as fh:
                    import csv

                    columns = next(csv.reader(fh), [])
                    columns = [c.lstrip("\ufeff") for c in columns]
            elif suffix in (".parquet", ".pq"):
                columns = pq.read_schema(path).names
            elif suffix in (".jsonl", ".ndjson"):
                with path.open("r", encoding="utf-8") as fh:
                    first = next((line for line in fh if line.strip()), "")
                columns = list(json.loads(first).keys()) if first else []
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); re-save the file as UTF-8") from None
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: cannot be read ({type(exc).__name__}); check the file is complete and in its format") from None
        if columns is not None:
            for col, flag in ((id_col, "--id-col"), (patient_col, "--patient-col"), (text_col, "--text-col")):
                if col not in columns:
                    found = ", ".join(columns[:12]) or "none"
                    raise InputError(f"{path}: missing column '{col}' (columns found: {found}); name yours with {flag} NAME")


def cmd_run(args: argparse.Namespace) -> int:
    inputs = args.inputs
    if not inputs:
        if not SAMPLE_ARCHIVE.is_dir():
            raise InputError("no INPUT given and no examples/archive here; run from the calcmine checkout or name your notes")
        inputs = [str(SAMPLE_ARCHIVE)]
    _preflight(inputs, args.id_col, args.patient_col, args.text_col)
    if args.model:
        from pipeline.cases import EvidenceModel

        EvidenceModel.load(args.model)
    started = time.perf_counter()
    if args.no_prefect:
        result = _run_in_process(inputs, args)
    else:
        from flows.calcmine_flow import calcmine_run

        result = calcmine_run(
            inputs=[str(i) for i in inputs], out=args.out, model=args.model,
            id_col=args.id_col, patient_col=args.patient_col, text_col=args.text_col,
        )
    _summary(result, time.perf_counter() - started)
    return 0


def _run_in_process(inputs: list[str], args: argparse.Namespace) -> dict:
    from pipeline.cases import CaseClassifier, EvidenceModel
    from pipeline.io import load_inputs, validate_notes
    from pipeline.process import assemble, extract
    from pipeline.runner import Timer, write_results

    timer = Timer()
    notes, failures, read = load_inputs(inputs, args.id_col, args.patient_col, args.text_col)
    valid, invalid = validate_notes(notes)
    timer.mark("load")
    rows = extract(valid)
    rows.failures = failures + invalid + rows.failures
    timer.mark("nlp")
    classifier = CaseClassifier(EvidenceModel.load(args.model)) if args.model else CaseClassifier()
    tables = assemble(valid, rows, classifier)
    timer.mark("tables_and_cases")
    manifest = write_results(tables, Path(args.out), {"inputs": read, "model": classifier.model.version, "timings": timer.marks})
    return {"counts": manifest["counts"], "outputs": manifest["outputs"]}


def _summary(result: dict, seconds: float) -> None:
    c = result["counts"]
    labels = ", ".join(f"{k} {v}" for k, v in c["cases_by_label"].items()) or "none"
    lines = [
        f"calcmine: {c['notes_processed']} notes read ({c['notes_failed']} failed, see run.json), "
        f"{c['notes_with_calcification']} with calcification mentions, {c['patients']} patients",
        f"  cases: {labels}",
        f"  mentions {c['mentions']}, lab values {c['labs']}, conditions {c['conditions']}",
    ]
    for name, path in result["outputs"].items():
        lines.append(f"  {name:<10} {path}")
    lines.append(f"  took {seconds:.1f} s")
    print("\n".join(lines))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import evaluate_path

    report = evaluate_path(Path(args.gold), args.split)
    print(report.text())
    if args.out:
        from pipeline.io import write_json

        write_json(report.as_dict(), Path(args.out) / "evaluation.json")
    return 0


def cmd_check_rules(args: argparse.Namespace) -> int:
    from pipeline import resources

    tables = resources.all_rule_tables()
    n = sum(len(v) if not isinstance(v, dict) else sum(len(x) for x in v.values()) for v in tables.values())
    print(f"calcmine: {n} rules in {len(tables)} rule sets, all valid")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"run": cmd_run, "evaluate": cmd_evaluate, "check-rules": cmd_check_rules}
    try:
        return commands[args.command](args)
    except CalcmineError as exc:
        print(f"calcmine: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("calcmine: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for users, no traceback, no note text
        print(f"calcmine: internal error ({type(exc).__name__}); please report it with run.json", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
