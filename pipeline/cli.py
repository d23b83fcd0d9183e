"""The ``calcmine`` command.

    calcmine run [INPUT ...] [--out DIR] [--model PATH] [--id-col C --patient-col C --text-col C] [--no-report]
    calcmine report DIR [--screenshot [--patient ID]]
    calcmine evaluate [GOLD_DIR_OR_FILE] [--split heldout] [--reviewed REVIEWED.csv] [--out DIR]
    calcmine train REVIEWED.csv [--run DIR] [--out models] [--name NAME]
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
    run.add_argument("--model", default=None, help="case classifier: evidence JSON or a .skops from calcmine train (default: the packaged evidence JSON)")
    run.add_argument("--id-col", default="note_id")
    run.add_argument("--patient-col", default="patient_id")
    run.add_argument("--text-col", default="text")
    run.add_argument("--no-prefect", action="store_true", help="run in-process without the Prefect flow")
    run.add_argument("--no-report", action="store_true", help="do not write the HTML report (OUT/report/)")
    run.add_argument("--labs", default=None, help="structured labs (CSV/Parquet: patient_id, analyte, value, unit, taken_at) merged into labs")
    run.add_argument("--workers", type=int, default=1, help="worker processes for the NLP (default 1)")
    run.add_argument("--dask", default=None, metavar="ADDRESS", help="run shards on a Dask cluster (scheduler address, or 'local')")
    run.add_argument("--shard-size", type=int, default=2000, help="notes per shard (default 2000)")
    run.add_argument("--sql", default=None, metavar="URL", help="also read notes from a database (SQLAlchemy URL), with --query")
    run.add_argument("--query", default=None, help="SQL query returning note_id, patient_id, text (note_date, note_type optional)")

    sc = sub.add_parser("schedule", help="serve the archive flow on a cron schedule (Prefect's local server)")
    sc.add_argument("inputs", nargs="*", help="archive files, folders or globs")
    sc.add_argument("--out", required=True, help="output folder, updated incrementally on each run")
    sc.add_argument("--cron", default="0 2 * * *", help="cron schedule (default: '0 2 * * *', 02:00 every night)")
    sc.add_argument("--name", default="calcmine-nightly", help="deployment name")
    sc.add_argument("--workers", type=int, default=1)
    sc.add_argument("--model", default=None)
    sc.add_argument("--labs", default=None)
    sc.add_argument("--sql", default=None, metavar="URL")
    sc.add_argument("--query", default=None)
    sc.add_argument("--dry-run", action="store_true", help="print the deployment and exit without serving")

    ev = sub.add_parser("evaluate", help="score the pipeline against a hand-written gold set")
    ev.add_argument("gold", nargs="?", default=None, help="a gold folder (mentions/, negation/, labs/, cases/) or one .jsonl file")
    ev.add_argument("--split", default="heldout", choices=["dev", "heldout", "all"])
    ev.add_argument("--out", default=None, help="write the evaluation (JSON + errors) to this folder")
    ev.add_argument("--reviewed", default=None, help="a review.csv with reviewer_label filled: agreement of its label with reviewer_label")

    tr = sub.add_parser("train", help="fit a case model on reviewers' labels in a review.csv")
    tr.add_argument("reviewed", help="review.csv with reviewer_label filled in (empty rows are skipped)")
    tr.add_argument("--run", default=None, help="the run folder with its tables (default: the CSV's folder)")
    tr.add_argument("--out", default="models", help="folder for the model and its card (default: models)")
    tr.add_argument("--name", default=None, help="model name (default: case-model-<data hash>)")
    tr.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds (default: 0)")

    sub.add_parser("check-rules", help="load and validate every shipped rule file")

    rp = sub.add_parser("report", help="write the HTML chart-review report of a result folder (DIR/report/)")
    rp.add_argument("dir", help="a result folder written by calcmine run")
    rp.add_argument("--screenshot", action="store_true", help="also render it in headless Chromium: report/screenshot*.png")
    rp.add_argument("--patient", default=None, help="the case page to screenshot (default: the first case)")
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
    if not inputs and not args.sql:
        if not SAMPLE_ARCHIVE.is_dir():
            raise InputError("no INPUT given and no examples/archive here; run from the calcmine checkout or name your notes")
        inputs = [str(SAMPLE_ARCHIVE)]
    _check_run_options(args)
    _preflight([i for i in inputs if not any(ch in i for ch in "*?[")], args.id_col, args.patient_col, args.text_col)
    if args.model:
        from pipeline.train import load_classifier

        load_classifier(args.model)
    if args.labs:
        from pipeline.structured import load_structured_labs

        load_structured_labs(args.labs)
    started = time.perf_counter()
    if args.no_prefect:
        result = _run_in_process(inputs, args)
    else:
        from flows.archive_flow import with_runner

        result = with_runner(args.workers, args.dask)(
            inputs=[str(i) for i in inputs], out=args.out, workers=args.workers, sql=args.sql, query=args.query,
            model=args.model, labs=args.labs, shard_size=args.shard_size, report=not args.no_report,
            id_col=args.id_col, patient_col=args.patient_col, text_col=args.text_col,
        )
    _summary(result, time.perf_counter() - started)
    return 0


def _check_run_options(args: argparse.Namespace) -> None:
    if args.sql and not args.query:
        raise InputError("--sql needs --query 'SELECT note_id, patient_id, text FROM ...'")
    if getattr(args, "workers", 1) < 1:
        raise InputError("--workers must be 1 or more")
    if getattr(args, "shard_size", 1) < 1:
        raise InputError("--shard-size must be 1 or more")
    if args.no_prefect and (args.sql or args.dask or args.workers > 1):
        raise InputError("--sql, --dask and --workers need the Prefect flow; drop --no-prefect")


def cmd_schedule(args: argparse.Namespace) -> int:
    if not args.inputs and not args.sql:
        raise InputError("schedule needs an archive: files, folders, globs, or --sql URL --query Q")
    _check_run_options(argparse.Namespace(**vars(args), no_prefect=False, dask=None, shard_size=1))
    from flows.archive_flow import build_deployment

    deployment = build_deployment(args)
    schedule = deployment.schedules[0].schedule
    print(f"calcmine: deployment '{deployment.name}' of flow calcmine-archive, cron '{schedule.cron}', "
          f"output {args.out}")
    if args.dry_run:
        return 0
    from prefect import serve

    serve(deployment)
    return 0


def _run_in_process(inputs: list[str], args: argparse.Namespace) -> dict:
    from pipeline.io import load_inputs, validate_notes
    from pipeline.process import classify_run, extract
    from pipeline.runner import Timer, write_results

    timer = Timer()
    notes, failures, read = load_inputs(inputs, args.id_col, args.patient_col, args.text_col)
    valid, invalid = validate_notes(notes)
    timer.mark("load")
    rows = extract(valid)
    rows.failures = failures + invalid + rows.failures
    timer.mark("nlp")
    tables, classifier = classify_run(valid, rows, args.model, getattr(args, "labs", None))
    timer.mark("tables_and_cases")
    manifest = write_results(tables, Path(args.out), {"inputs": read, "model": classifier.model.version, "timings": timer.marks},
                             notes=valid, report=not getattr(args, "no_report", False))
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
    inc = result.get("incremental")
    if inc:
        lines.insert(1, f"  this run: {inc['new']} new and {inc['changed']} changed notes processed, "
                        f"{inc['unchanged']} unchanged skipped, {inc['invalid']} invalid")
    for name, path in result["outputs"].items():
        lines.append(f"  {name:<10} {path}")
    lines.append(f"  took {seconds:.1f} s")
    print("\n".join(lines))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluate import Report, evaluate_path

    if not args.gold and not args.reviewed:
        raise InputError("nothing to evaluate; give a gold folder (e.g. tests/gold) or --reviewed REVIEWED.csv")
    report = evaluate_path(Path(args.gold), args.split) if args.gold else Report()
    if args.reviewed:
        from pipeline.train import evaluate_reviewed

        reviewed = evaluate_reviewed(args.reviewed)
        report.sections.update(reviewed.sections)
        report.errors.update(reviewed.errors)
    print(report.text())
    if args.out:
        from pipeline.io import write_json

        write_json(report.as_dict(), Path(args.out) / "evaluation.json")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.train import train

    result = train(args.reviewed, run_dir=args.run, out_dir=args.out, name=args.name, seed=args.seed)
    print(result.summary())
    return 0


def cmd_check_rules(args: argparse.Namespace) -> int:
    from pipeline import resources

    tables = resources.all_rule_tables()
    n = sum(len(v) if not isinstance(v, dict) else sum(len(x) for x in v.values()) for v in tables.values())
    print(f"calcmine: {n} rules in {len(tables)} rule sets, all valid")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import screenshots, write_report

    index = write_report(Path(args.dir))
    print(f"calcmine: report written: {index}")
    if args.screenshot:
        for shot in screenshots(args.dir, args.patient):
            print(f"  screenshot {shot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"run": cmd_run, "schedule": cmd_schedule, "evaluate": cmd_evaluate, "train": cmd_train, "check-rules": cmd_check_rules,
                "report": cmd_report}
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
