"""Evaluation against hand-written gold sets (formats: ``tests/gold/FORMAT.md``).

- mentions: presence per text (P/R/F1), span-level mentions matched by overlap (P/R/F1),
  concept accuracy and assertion accuracy over matched mentions, site F1 over (text, site) pairs
  of matched and unmatched mentions.
- negation: per target, assertion accuracy and negation P/R/F1 (negated vs not).
- labs: value-level P/R/F1, a value matching when analyte and number agree and spans overlap.
- cases: accuracy, per-label precision/recall and the confusion matrix.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import vocab
from pipeline.errors import InputError


def read_jsonl(path: Path) -> list[dict]:
    items = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError:
                    raise InputError(f"{path}:{n}: not a JSON object; gold files are JSON Lines") from None
    return items


def locate(text: str, span: str, occurrence: int = 1) -> tuple[int, int]:
    start = -1
    for _ in range(occurrence):
        start = text.find(span, start + 1)
        if start < 0:
            raise InputError(f"gold span {span!r} (occurrence {occurrence}) not found in its text; fix the gold file")
    return start, start + len(span)


def prf(tp: int, fp: int, fn: int) -> dict:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "tp": tp, "fp": fp, "fn": fn}


@dataclass
class Report:
    sections: dict = field(default_factory=dict)
    errors: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"metrics": self.sections, "errors": self.errors}

    def text(self) -> str:
        lines = []
        for name, metrics in self.sections.items():
            lines.append(f"== {name}")
            for key, value in metrics.items():
                if isinstance(value, dict) and "f1" in value:
                    lines.append(f"  {key:<28} P {value['precision']:.3f}  R {value['recall']:.3f}  F1 {value['f1']:.3f}"
                                 f"  (tp {value['tp']}, fp {value['fp']}, fn {value['fn']})")
                elif isinstance(value, float):
                    lines.append(f"  {key:<28} {value:.3f}")
                elif key == "confusion":
                    lines.append("  confusion (rows gold, columns predicted):")
                    lines.extend("    " + row for row in value)
                else:
                    lines.append(f"  {key:<28} {value}")
        return "\n".join(lines)


def _files(path: Path, kind: str, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    folder = path / kind
    if not folder.is_dir():
        return []
    # "dev" is every development file (dev.jsonl, dev2.jsonl, ...); "heldout" only heldout.jsonl
    files = sorted(folder.glob("*.jsonl"))
    if split == "all":
        return files
    return [f for f in files if (f.stem.startswith("dev") if split == "dev" else f.stem == split)]


def evaluate_mentions(items: list[dict], nlp) -> tuple[dict, list]:
    tp_doc = fp_doc = fn_doc = 0
    tp = fp = fn = 0
    concept_ok = assertion_ok = matched = 0
    site_tp = site_fp = site_fn = 0
    errors = []
    for item in items:
        doc = nlp(item["text"])
        pred = list(doc._.calc_mentions or ())
        gold = []
        for g in item["mentions"]:
            s, e = locate(item["text"], g["text"], g.get("occurrence", 1))
            gold.append((s, e, g))
        has_g, has_p = bool(gold), bool(pred)
        tp_doc += has_g and has_p
        fp_doc += has_p and not has_g
        fn_doc += has_g and not has_p
        used = set()
        gold_sites, pred_sites = set(), set()
        for s, e, g in gold:
            for site in g.get("sites") or ["unspecified"]:
                gold_sites.add((s, site))
        for s, e, g in gold:
            hit = next((i for i, p in enumerate(pred) if i not in used and p.start < e and s < p.end), None)
            if hit is None:
                fn += 1
                errors.append({"id": item["id"], "kind": "missed", "gold": g["text"]})
                continue
            used.add(hit)
            p = pred[hit]
            tp += 1
            matched += 1
            concept_ok += p.concept == g["concept"]
            assertion_ok += p.assertion == g["assertion"]
            for site in p.sites:
                pred_sites.add((s, site))
            if p.concept != g["concept"] or p.assertion != g["assertion"] or set(p.sites) != set(g.get("sites") or ["unspecified"]):
                errors.append({"id": item["id"], "kind": "mismatch", "gold": g, "pred": {
                    "text": p.text, "concept": p.concept, "sites": list(p.sites), "assertion": p.assertion,
                    "triggers": list(p.triggers)}})
        for i, p in enumerate(pred):
            if i not in used:
                fp += 1
                for site in p.sites:
                    pred_sites.add((p.start, site))
                errors.append({"id": item["id"], "kind": "spurious", "pred": p.text, "concept": p.concept, "assertion": p.assertion})
        site_tp += len(gold_sites & pred_sites)
        site_fp += len(pred_sites - gold_sites)
        site_fn += len(gold_sites - pred_sites)
    metrics = {
        "texts": len(items),
        "presence per text": prf(tp_doc, fp_doc, fn_doc),
        "mentions (overlap)": prf(tp, fp, fn),
        "sites": prf(site_tp, site_fp, site_fn),
        "concept accuracy": round(concept_ok / matched, 4) if matched else 0.0,
        "assertion accuracy": round(assertion_ok / matched, 4) if matched else 0.0,
    }
    return metrics, errors


def evaluate_negation(items: list[dict]) -> tuple[dict, list]:
    from pipeline.assertions import assess_assertions

    tp = fp = fn = 0
    correct = total = 0
    errors = []
    per = Counter()
    for item in items:
        spans = [locate(item["text"], t["text"], t.get("occurrence", 1)) for t in item["targets"]]
        found = assess_assertions(item["text"], spans)
        for t, a in zip(item["targets"], found):
            total += 1
            gold_neg = t["assertion"] == "negated"
            tp += gold_neg and a.negated
            fp += a.negated and not gold_neg
            fn += gold_neg and not a.negated
            ok = a.status == t["assertion"]
            correct += ok
            per[(t["assertion"], ok)] += 1
            if not ok:
                errors.append({"id": item["id"], "target": t["text"], "gold": t["assertion"], "pred": a.status, "triggers": list(a.triggers)})
    metrics = {"targets": total, "negation": prf(tp, fp, fn), "assertion accuracy": round(correct / total, 4) if total else 0.0}
    for status in vocab.ASSERTIONS:
        n = per[(status, True)] + per[(status, False)]
        if n:
            metrics[f"accuracy {status}"] = f"{per[(status, True)]}/{n}"
    return metrics, errors


def evaluate_labs(items: list[dict], nlp) -> tuple[dict, list]:
    tp = fp = fn = 0
    errors = []
    for item in items:
        doc = nlp(item["text"])
        pred = list(doc._.calc_labs or ())
        used = set()
        for g in item["labs"]:
            s, e = locate(item["text"], g["text"], g.get("occurrence", 1))
            hit = next((i for i, p in enumerate(pred) if i not in used and p.analyte == g["analyte"]
                        and abs(p.value - float(g["value"])) < 1e-6 and p.start < e and s < p.end), None)
            if hit is None:
                hit = next((i for i, p in enumerate(pred) if i not in used and p.analyte == g["analyte"]
                            and abs(p.value - float(g["value"])) < 1e-6), None)
            if hit is None:
                fn += 1
                errors.append({"id": item["id"], "kind": "missed", "gold": g})
            else:
                used.add(hit)
                tp += 1
        for i, p in enumerate(pred):
            if i not in used:
                fp += 1
                errors.append({"id": item["id"], "kind": "spurious", "pred": {"analyte": p.analyte, "value": p.value, "text": p.text}})
    return {"notes": len(items), "values": prf(tp, fp, fn)}, errors


def evaluate_cases(items: list[dict], model: str | None = None) -> tuple[dict, list]:
    from pipeline.process import process

    notes = pd.DataFrame([
        {"note_id": n["note_id"], "patient_id": it["patient_id"], "note_date": n.get("note_date"),
         "note_type": n.get("note_type"), "text": n["text"]}
        for it in items for n in it["notes"]
    ])
    tables = process(notes, model=model)
    pred = dict(zip(tables.cases["patient_id"], tables.cases["label"]))
    gold = {it["patient_id"]: it["label"] for it in items}
    return case_agreement(gold, pred, {r.patient_id: r.reasons for r in tables.cases.itertuples()})


def case_agreement(gold: dict, pred: dict, reasons: dict | None = None) -> tuple[dict, list]:
    labels = list(vocab.LABELS)
    confusion = {g: Counter() for g in labels}
    errors = []
    for pid, g in gold.items():
        p = pred.get(pid, "missing")
        confusion[g][p] += 1
        if p != g:
            errors.append({"patient_id": pid, "gold": g, "pred": p, "reasons": (reasons or {}).get(pid, "")})
    n = len(gold)
    correct = sum(confusion[g][g] for g in labels)
    metrics: dict = {"cases": n, "accuracy": round(correct / n, 4) if n else 0.0}
    for lab in labels:
        tp = confusion[lab][lab]
        fp = sum(confusion[g][lab] for g in labels if g != lab)
        fn = sum(c for p, c in confusion[lab].items() if p != lab)
        metrics[f"label {lab}"] = prf(tp, fp, fn)
    width = max(len(x) for x in labels) + 2
    rows = ["".ljust(width) + "".join(x[:12].rjust(14) for x in labels)]
    for g in labels:
        rows.append(g.ljust(width) + "".join(str(confusion[g][p]).rjust(14) for p in labels))
    metrics["confusion"] = rows
    return metrics, errors


def evaluate_path(path: Path, split: str = "heldout", model: str | None = None) -> Report:
    from pipeline.process import default_nlp

    if not path.exists():
        raise InputError(f"gold not found: {path}; give a gold folder (e.g. tests/gold) or a .jsonl file")
    report = Report()
    nlp = default_nlp()
    kinds = ["mentions", "negation", "labs", "cases"]
    if path.is_file():
        kinds = [path.parent.name] if path.parent.name in kinds else []
        if not kinds:
            raise InputError(f"{path}: cannot tell the gold kind; put it under mentions/, negation/, labs/ or cases/")
    for kind in kinds:
        files = _files(path, kind, split)
        if not files:
            continue
        items = [x for f in files for x in read_jsonl(f)]
        name = f"{kind} ({', '.join(f.stem for f in files)})"
        if kind == "mentions":
            metrics, errors = evaluate_mentions(items, nlp)
        elif kind == "negation":
            metrics, errors = evaluate_negation(items)
        elif kind == "labs":
            metrics, errors = evaluate_labs(items, nlp)
        else:
            metrics, errors = evaluate_cases(items, model)
        report.sections[name] = metrics
        report.errors[name] = errors
    return report
