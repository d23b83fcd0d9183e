"""Throughput of the calcmine spaCy pipeline against spaCy's bare tokenizer, one and two processes.

    .venv/bin/python benchmarks/bench_nlp.py            # 20,000 notes, best of 3
    .venv/bin/python benchmarks/bench_nlp.py --quick    # 2,000-note smoke run
    .venv/bin/python benchmarks/bench_nlp.py --notes 50000 --repeat 5
    .venv/bin/python benchmarks/bench_nlp.py --exported  # the corpus typed with \r\n and two blanks after periods

Measurements (same synthetic corpus, see ``benchmarks/corpus.py``):

  a   ``spacy.blank("en")`` tokenizer: ``nlp.tokenizer.pipe(texts, batch_size=256)``  -- the baseline
  a2  ``spacy.blank("en")`` ``nlp.pipe`` (no components: the same work as a)
  a3  the scispaCy tokenizer calcmine uses, alone (``build_nlp().tokenizer.pipe``)
  b   ``pipeline.build_nlp()``, ``nlp.pipe(texts, batch_size=256)``
  c   b plus ``pipeline.tables.doc_rows`` for every note
  d   c split into 2 shards in 2 worker processes (spawn; each worker builds the pipeline once and
      returns only row counts), timed end to end including pool start-up
  d2  ``nlp.pipe(texts, n_process=2, batch_size=256)`` for reference (an exception is reported)

Single-process measurements run in interleaved rounds (a, a2, a3, b, c, then again), so load from
other work falls on all of them alike; each gets a freshly built pipeline and one warm-up pass over a small
slice of *different* notes, so neither the tokenizer cache nor the vocabulary carries over between
repeats; the best of ``--repeat`` rounds is kept, as wall time and as CPU time of the process (the
steadier figure on a shared machine). Figures also go to ``benchmarks/out/nlp.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

warnings.filterwarnings("ignore", category=FutureWarning)

BATCH = 256
WARMUP_NOTES = 200
SEED = 13
WARMUP_SEED = 7


# ----------------------------------------------------------------------------------------------
# the measured workloads (each returns a small summary; the caller times it)


def blank_nlp():
    import spacy

    return spacy.blank("en")


def calc_nlp():
    import pipeline

    return pipeline.build_nlp()


def tokenize(nlp, texts) -> dict:
    n = 0
    for _doc in nlp.tokenizer.pipe(texts, batch_size=BATCH):
        n += 1
    return {"docs": n}


def pipe(nlp, texts) -> dict:
    n = 0
    for _doc in nlp.pipe(texts, batch_size=BATCH):
        n += 1
    return {"docs": n}


def rows(nlp, texts, offset: int = 0) -> dict:
    from pipeline import tables

    rowset = tables.RowSet()
    for i, doc in enumerate(nlp.pipe(texts, batch_size=BATCH), offset):
        tables.doc_rows(doc, {"note_id": str(i), "patient_id": str(i), "note_date": None}, rowset)
    return counts(rowset)


def counts(rowset) -> dict:
    return {
        "docs": rowset.notes_done,
        "notes_with_mentions": rowset.notes_with_mentions,
        "mentions": len(rowset.mentions),
        "labs": len(rowset.labs),
        "conditions": len(rowset.conditions),
        "failures": len(rowset.failures),
    }


def pipe_n_process(nlp, texts, n_process: int) -> dict:
    n = 0
    for _doc in nlp.pipe(texts, batch_size=BATCH, n_process=n_process):
        n += 1
    return {"docs": n}


def _worker(args: tuple[list[str], int]) -> dict:
    """One shard in a worker process: build the pipeline once, run c, return only the counts."""
    texts, offset = args
    return rows(calc_nlp(), texts, offset)


def source_fingerprint() -> str:
    """Hash of calcmine's code and vocabularies, to notice edits made while the benchmark runs."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted((ROOT / "pipeline").rglob("*")):
        if f.is_file() and f.suffix in (".py", ".tsv"):
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def sum_counts(parts: list[dict]) -> dict:
    total: dict = {}
    for part in parts:
        for k, v in part.items():
            total[k] = total.get(k, 0) + v
    return total


# ----------------------------------------------------------------------------------------------
# timing


def interleaved(configs, texts, warm, repeat: int) -> dict:
    """Best wall and CPU time of ``repeat`` rounds; each round runs every configuration once, in
    turn, on a fresh pipeline warmed on ``warm`` -- so load from other work on the machine falls on
    all of them alike. CPU time (this process only) is the steadier figure on a shared machine."""
    out = {key: {"wall": [], "cpu": [], "summary": {}} for key, *_ in configs}
    for _ in range(repeat):
        for key, _name, make_nlp, work in configs:
            nlp = make_nlp()
            work(nlp, warm)
            w0, c0 = time.perf_counter(), time.process_time()
            out[key]["summary"] = work(nlp, texts)
            out[key]["cpu"].append(time.process_time() - c0)
            out[key]["wall"].append(time.perf_counter() - w0)
            del nlp
    return out


def shard(texts: list[str], n: int) -> list[tuple[list[str], int]]:
    size = -(-len(texts) // n)
    return [(texts[i : i + size], i) for i in range(0, len(texts), size)]


def run_pool(texts: list[str], workers: int, method: str) -> dict:
    ctx = mp.get_context(method)
    shards = shard(texts, workers) if texts else [([], 0)] * workers
    with ctx.Pool(workers) as pool:
        parts = pool.map(_worker, shards, chunksize=1)
    return sum_counts(parts)


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--notes", type=int, default=20_000, help="notes in the corpus (default 20000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of a/b/c, best kept (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 notes")
    ap.add_argument("--workers", type=int, default=2, help="processes for d/d2 (default 2)")
    ap.add_argument("--start-method", default="spawn", choices=["spawn", "forkserver"])
    ap.add_argument("--exported", action="store_true",
                    help="type every note as many exports do: \\r\\n line endings and two blanks after each period")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "nlp.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.notes = 2_000
    repeat = max(1, args.repeat)

    import spacy

    import pipeline
    from corpus import make_notes

    fingerprint_start = source_fingerprint()
    t0 = time.perf_counter()
    texts = make_notes(args.notes, seed=SEED)
    warm = make_notes(WARMUP_NOTES, seed=WARMUP_SEED)
    if args.exported:  # whitespace spaCy makes tokens of: the pipeline reads around them (nlp.Gaps)
        texts, warm = ([t.replace(". ", ".  ").replace("\n", "\r\n") for t in notes] for notes in (texts, warm))
    gen_s = time.perf_counter() - t0
    chars = sum(map(len, texts))
    print(f"corpus: {len(texts):,} notes, {chars / 1e6:.1f} M chars (mean {chars / len(texts):.0f}), "
          f"{len(set(texts)):,} distinct, generated in {gen_s:.1f} s")
    print(f"cores {os.cpu_count()}, python {platform.python_version()}, spaCy {spacy.__version__}, "
          f"calcmine {pipeline.__version__}, repeat {repeat}, batch_size {BATCH}, "
          f"load avg {os.getloadavg()[0]:.2f} at start")
    load_start = os.getloadavg()

    results: list[dict] = []

    def record(key, name, seconds, summary=None, times=None, error=None, cpu=None, cpu_runs=None):
        results.append({"key": key, "name": name, "notes": len(texts), "seconds": seconds,
                        "notes_per_s": (len(texts) / seconds) if seconds else None,
                        "cpu_seconds": cpu, "cpu_runs": cpu_runs,
                        "runs": times, "counts": summary, "error": error})
        print(f"  .. {key:<3} {name}: " + (f"{seconds:.2f} s" if seconds else f"FAILED {error}")
              + (f" (cpu {cpu:.2f} s)" if cpu else ""), flush=True)

    # single process (interleaved rounds) ----------------------------------------------------
    configs = [
        ("a", "blank('en') tokenizer.pipe", blank_nlp, tokenize),
        ("a2", "blank('en') nlp.pipe", blank_nlp, pipe),
        ("a3", "calcmine tokenizer only (scispaCy)", calc_nlp, tokenize),
        ("b", "calcmine nlp.pipe", calc_nlp, pipe),
        ("c", "calcmine nlp.pipe + doc_rows", calc_nlp, rows),
    ]
    timed = interleaved(configs, texts, warm, repeat)
    for key, name, *_ in configs:
        t = timed[key]
        record(key, name, min(t["wall"]), t["summary"], t["wall"], cpu=min(t["cpu"]), cpu_runs=t["cpu"])
    single_counts = timed["c"]["summary"]

    # parallel -------------------------------------------------------------------------------
    w = args.workers
    try:
        run_pool(warm, w, args.start_method)  # warm-up: imports, .pyc, OS file cache
        t0 = time.perf_counter()
        run_pool([], w, args.start_method)
        record("d0", f"  start-up only: {w} workers, import + build_nlp", time.perf_counter() - t0)
        t0 = time.perf_counter()
        summ = run_pool(texts, w, args.start_method)
        record("d", f"{w} shards x {w} {args.start_method} workers + doc_rows", time.perf_counter() - t0, summ)
        if summ != single_counts:
            why = ("pipeline/ changed during the run" if source_fingerprint() != fingerprint_start
                   else "results depend on process state?")
            print(f"  !! parallel counts differ from single process ({why}): {summ} vs {single_counts}")
    except Exception as exc:  # noqa: BLE001 - report, do not crash
        record("d", f"{w} shards x {w} {args.start_method} workers + doc_rows", None,
               error=f"{type(exc).__name__}: {exc}")
    try:
        nlp = calc_nlp()
        pipe_n_process(nlp, warm, w)
        t0 = time.perf_counter()
        summ = pipe_n_process(nlp, texts, w)
        record("d2", f"calcmine nlp.pipe(n_process={w})", time.perf_counter() - t0, summ)
        del nlp
    except Exception as exc:  # noqa: BLE001
        record("d2", f"calcmine nlp.pipe(n_process={w})", None, error=f"{type(exc).__name__}: {exc}")

    # report ---------------------------------------------------------------------------------
    by = {r["key"]: r for r in results}
    base = by["a"]["seconds"]
    base_cpu = by["a"]["cpu_seconds"]
    one_proc = {"d": "c", "d2": "b"}  # d0 has no single-process counterpart  # the single-process run each parallel one is compared with
    for r in results:
        r["time_vs_tokenizer"] = (r["seconds"] / base) if r["seconds"] and r["key"] != "d0" else None
        r["cpu_vs_tokenizer"] = (r["cpu_seconds"] / base_cpu) if r.get("cpu_seconds") else None
        if r["key"] == "d0":
            r["notes"], r["notes_per_s"] = 0, None
        ref = by.get(one_proc.get(r["key"], ""))
        r["speedup_vs_1_process"] = (ref["seconds"] / r["seconds"]) if ref and r["seconds"] and ref["seconds"] else None

    print()
    head = (f"{'':<4}{'measurement':<44}{'notes':>8}{'seconds':>9}{'notes/s':>10}{'x tok':>8}"
            f"{'cpu s':>8}{'x tok cpu':>10}{'speed-up':>16}")
    print(head)
    print("-" * len(head))
    for r in results:
        if r["seconds"] is None:
            print(f"{r['key']:<4}{r['name']:<44}{r['notes']:>8}   FAILED: {r['error']}")
            continue
        sp = f"{r['speedup_vs_1_process']:.2f}x vs {one_proc[r['key']]}" if r["speedup_vs_1_process"] else ""
        if r["key"] == "d0":
            print(f"{r['key']:<4}{r['name']:<44}{'':>8}{r['seconds']:>9.2f}   (included in d)")
            continue
        cpu = (f"{r['cpu_seconds']:>8.2f}{r['cpu_vs_tokenizer']:>9.2f}x" if r.get("cpu_seconds") else f"{'':>18}")
        print(f"{r['key']:<4}{r['name']:<44}{r['notes']:>8}{r['seconds']:>9.2f}{r['notes_per_s']:>10,.0f}"
              f"{r['time_vs_tokenizer']:>7.2f}x{cpu}{sp:>16}")
    print("-" * len(head))
    print(f"load avg (1/5/15 min) now {'/'.join(f'{x:.2f}' for x in os.getloadavg())} -- other work on "
          f"these {os.cpu_count()} cores slows every figure, the parallel ones most")
    print("x tok = wall time / time of a (blank tokenizer); x tok cpu = the same with this process's CPU time "
          "(steadier when the machine is shared); speed-up = time of the 1-process run / this run")
    c = by["c"]["counts"] or {}
    print(f"rows (c): {c.get('mentions', 0):,} mentions in {c.get('notes_with_mentions', 0):,} notes "
          f"({c.get('notes_with_mentions', 0) / len(texts):.0%}), {c.get('labs', 0):,} labs, "
          f"{c.get('conditions', 0):,} conditions, {c.get('failures', 0)} failures")

    fingerprint_end = source_fingerprint()
    if fingerprint_end != fingerprint_start:
        print(f"note: pipeline/ sources changed during the run ({fingerprint_start} -> {fingerprint_end})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "nlp",
        "notes": len(texts), "exported": args.exported, "chars": chars, "distinct_notes": len(set(texts)), "seed": SEED,
        "repeat": repeat, "batch_size": BATCH, "warmup_notes": WARMUP_NOTES, "workers": w,
        "start_method": args.start_method, "cores": os.cpu_count(), "python": platform.python_version(),
        "spacy": spacy.__version__, "calcmine": pipeline.__version__, "platform": platform.platform(),
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "pipeline_sources": {"start": fingerprint_start, "end": fingerprint_end},
        "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
