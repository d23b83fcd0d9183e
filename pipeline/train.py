"""Retraining the case classifier from chart review, and loading any case classifier by path.

``calcmine train REVIEWED.csv`` reads calcmine's ``review.csv`` with ``reviewer_label`` filled in
(rows left empty are skipped), rebuilds the per-patient features of :mod:`pipeline.features` from
the run's tables next to it (``mentions / labs / conditions / cases.parquet``; ``--run DIR``
names another folder), fits ``SimpleImputer + StandardScaler + LogisticRegression
(class_weight="balanced")``, cross-validates it (stratified k-fold, k = min(5, smallest class),
at least 2) and writes, under ``models/``:

- ``<name>.skops`` - the fitted pipeline, its feature list and the evidence weights the features
  were computed with (skops format; never pickle),
- ``<name>.json`` / ``<name>.md`` - the model card: features, SHA-256 of the training data, label
  counts, cross-validated accuracy, per-class precision/recall and confusion matrix, versions.

The trained model decides exactly as ``calcmine run --model <name>.skops`` will: a patient with no
present mention is ``no_calcification`` whatever the model says, in cross-validation too.
``load_classifier(path)`` is the one place a ``--model`` path becomes a classifier: a ``.skops``
file is a trained model, anything else an evidence JSON. Loading checks every type in the file
against an allow-list before skops builds anything.
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import schema, vocab
from pipeline.cases import CaseClassifier, EvidenceModel
from pipeline.errors import CalcmineError, InputError

FORMAT = "calcmine-trained-case-model"
FORMAT_VERSION = 1
TABLE_FILES = ("mentions", "labs", "conditions", "cases")
# Types a model written by ``calcmine train`` may hold beyond skops' own trusted defaults.
TRUSTED_TYPES = frozenset({
    "numpy.dtype",
    "sklearn.pipeline.Pipeline",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# -- reading a reviewed CSV ----------------------------------------------------------------------


def _unescape(cell: str) -> str:
    """Undo review.csv's spreadsheet-safety apostrophe (``'=x`` was written for ``=x``)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_START) else cell


def read_reviewed(path: str | Path, columns: tuple[str, ...] = ("patient_id", "reviewer_label")) -> pd.DataFrame:
    """Reviewed rows of a review.csv: ``row`` (spreadsheet row, header = 1) plus ``columns``.

    Rows with an empty ``reviewer_label`` are skipped; labels are trimmed and lower-cased and
    must be ANNOTATION.md case labels, as must ``label`` when asked for.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"reviewed file not found: {p}; give the review.csv with reviewer_label filled in")
    try:
        with p.open("r", encoding="utf-8-sig", newline="") as fh:
            records = list(csv.reader(fh))
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text (bad byte at offset {exc.start}); re-save the file as UTF-8 CSV") from None
    except (csv.Error, OSError) as exc:
        raise InputError(f"{p}: cannot be read as CSV ({type(exc).__name__}); save it from the spreadsheet as CSV") from None
    if not records:
        raise InputError(f"{p}: empty file; give calcmine's review.csv with reviewer_label filled in")
    header = [h.strip() for h in records[0]]
    for col in columns:
        if col not in header:
            raise InputError(f"{p}: missing column '{col}' (columns found: {', '.join(header[:12]) or 'none'}); use calcmine's review.csv")
    at = {c: header.index(c) for c in columns}
    labels = ", ".join(vocab.LABELS)
    rows, seen = [], {}
    for n, rec in enumerate(records[1:], start=2):
        cells = {c: (rec[i] if i < len(rec) else "") for c, i in at.items()}
        reviewer = cells["reviewer_label"].strip().lower()
        if not reviewer:
            continue
        if reviewer not in vocab.LABELS:
            raise InputError(f"{p} row {n}: reviewer_label '{reviewer[:40]}' is not a case label; use one of {labels}")
        pid = _unescape(cells["patient_id"].strip())
        if not pid:
            raise InputError(f"{p} row {n}: empty patient_id; restore it from calcmine's review.csv")
        if pid in seen:
            raise InputError(f"{p} row {n}: patient reviewed twice (also row {seen[pid]}); keep one row per patient")
        seen[pid] = n
        row = {"row": n, **cells, "patient_id": pid, "reviewer_label": reviewer}
        if "label" in cells:
            row["label"] = cells["label"].strip().lower()
            if row["label"] not in vocab.LABELS:
                raise InputError(f"{p} row {n}: label '{row['label'][:40]}' is not a case label; restore calcmine's label or use one of {labels}")
        rows.append(row)
    if not rows:
        raise InputError(f"{p}: no reviewed rows (reviewer_label is empty everywhere); fill reviewer_label with one of {labels}")
    frame = pd.DataFrame(rows, columns=["row", *columns])
    frame.attrs["rows_unreviewed"] = sum(1 for rec in records[1:] if any(c.strip() for c in rec)) - len(rows)
    return frame


def evaluate_reviewed(path: str | Path):
    """Agreement of calcmine's ``label`` with ``reviewer_label`` (an evaluate.Report)."""
    from pipeline.evaluate import Report, case_agreement

    reviewed = read_reviewed(path, ("patient_id", "label", "reviewer_label"))
    gold = dict(zip(reviewed["patient_id"], reviewed["reviewer_label"]))
    pred = dict(zip(reviewed["patient_id"], reviewed["label"]))
    metrics, errors = case_agreement(gold, pred)
    name = f"reviewed cases ({Path(path).name}: label vs reviewer_label)"
    return Report(sections={name: metrics}, errors={name: errors})


# -- the trained classifier ----------------------------------------------------------------------


@dataclass
class TrainedModel:
    """A loaded trained model: the fitted pipeline and what it needs to be applied."""

    name: str
    data_sha256: str
    pipeline: object
    features: list[str]
    evidence: EvidenceModel
    source: str
    created_at: str = ""

    @property
    def version(self) -> str:
        return f"{self.name}@{self.data_sha256[:12]}"

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.pipeline.classes_]


def _decide(model: TrainedModel, features: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Labels and class probabilities; no present mention forces ``no_calcification``."""
    missing = [f for f in model.features if f not in features.columns]
    if missing:
        raise CalcmineError(f"{model.source}: model needs features this calcmine does not compute ({', '.join(missing[:5])}); retrain it with calcmine train")
    if not len(features):
        return [], np.zeros((0, len(model.classes)))
    proba = model.pipeline.predict_proba(features[model.features].to_numpy(dtype="float64"))
    labels = [model.classes[i] for i in proba.argmax(axis=1)]
    labels = ["no_calcification" if n == 0 else lab for lab, n in zip(labels, features["n_present"])]
    return labels, proba


class TrainedCaseClassifier:
    """A trained model over the transparent classifier's evidence; same ``classify`` as CaseClassifier.

    Label and confidence come from the model (confidence = predicted probability of the label);
    score, ranked reasons, evidence pointers and each mention's mechanism come from the transparent
    scoring, with the model's probability as the first reason.
    """

    def __init__(self, model: TrainedModel) -> None:
        self.model = model
        self.transparent = CaseClassifier(model.evidence)

    def systemic_evidence(self, *args, **kwargs):
        return self.transparent.systemic_evidence(*args, **kwargs)

    def local_evidence(self, *args, **kwargs):
        return self.transparent.local_evidence(*args, **kwargs)

    def mention_score(self, *args, **kwargs):
        return self.transparent.mention_score(*args, **kwargs)

    def classify(self, patient_ids, notes, mentions, conditions, labs, ranges) -> tuple[pd.DataFrame, pd.Series]:
        from pipeline.features import case_features

        cases, mechanism = self.transparent.classify(patient_ids, notes, mentions, conditions, labs, ranges)
        ids = pd.DataFrame({"patient_id": list(patient_ids)})
        feats = case_features(ids, mentions, conditions, labs, self.transparent, ranges).reindex(cases["patient_id"].tolist())
        labels, proba = _decide(self.model, feats)
        cases = cases.astype(object)
        name = self.model.name
        for i, (label, n_present) in enumerate(zip(labels, feats["n_present"])):
            before = cases.at[i, "label"]
            if n_present == 0:
                lead = f"trained model {name}: not applied (no mention asserted as present)"
            else:
                p = float(proba[i, self.model.classes.index(label)])
                cases.at[i, "confidence"] = round(p, 3)
                lead = f"trained model {name}: p({label})={p:.2f}"
                if before != label:
                    lead += f" (evidence scoring alone: {before})"
            cases.at[i, "label"] = label
            cases.at[i, "reasons"] = " | ".join([lead] + [r for r in str(cases.at[i, "reasons"]).split(" | ") if r])
            cases.at[i, "model"] = self.model.version
        return schema.conform(cases, schema.CASES), mechanism


def _evidence_from(data: dict, source: str) -> EvidenceModel:
    return EvidenceModel.from_data(data, source)


def load_trained(path: str | Path) -> TrainedCaseClassifier:
    """Load a ``.skops`` written by ``calcmine train``; refuses any type outside the allow-list."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    p = Path(path)
    if not p.is_file():
        raise CalcmineError(f"model file not found: {p}; pass --model a calcmine evidence JSON or a .skops from calcmine train")
    fix = "retrain it with calcmine train"
    try:
        found = sio.get_untrusted_types(file=p)
    except Exception:  # noqa: BLE001 - any unreadable file is one message
        raise CalcmineError(f"{p}: not a skops model file; {fix} or pass an evidence JSON") from None
    untrusted = sorted(set(found) - TRUSTED_TYPES)
    if untrusted:
        raise CalcmineError(f"{p}: refused to load untrusted types ({', '.join(untrusted[:4])}); only models from calcmine train are loaded, {fix}")
    try:
        obj = sio.load(p, trusted=sorted(found))
    except Exception:  # noqa: BLE001
        raise CalcmineError(f"{p}: damaged skops model file; {fix}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CalcmineError(f"{p}: not a calcmine trained case model; {fix}")
    if obj.get("format_version") != FORMAT_VERSION:
        raise CalcmineError(f"{p}: model format version {obj.get('format_version')} is not {FORMAT_VERSION}; {fix}")
    if not isinstance(obj.get("pipeline"), Pipeline) or not hasattr(obj["pipeline"], "classes_"):
        raise CalcmineError(f"{p}: the file holds no fitted scikit-learn pipeline; {fix}")
    bad = sorted(set(map(str, obj["pipeline"].classes_)) - set(vocab.LABELS))
    if bad:
        raise CalcmineError(f"{p}: model predicts labels outside ANNOTATION.md ({', '.join(bad[:4])}); {fix}")
    evidence = _evidence_from(obj["evidence_model"], f"{p}:evidence_model")
    model = TrainedModel(str(obj["name"]), str(obj["data_sha256"]), obj["pipeline"], [str(f) for f in obj["features"]],
                         evidence, str(p), str(obj.get("created_at", "")))
    return TrainedCaseClassifier(model)


def load_classifier(path: str | Path | None = None):
    """The case classifier for ``--model PATH``: a trained ``.skops`` model or an evidence JSON."""
    if path is None:
        return CaseClassifier()
    p = Path(path)
    is_zip = False
    if p.is_file():
        with p.open("rb") as fh:
            is_zip = fh.read(4) == b"PK\x03\x04"
    if p.suffix.lower() == ".skops" or is_zip:
        return load_trained(p)
    return CaseClassifier(EvidenceModel.load(p))


# -- training ------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_run(run: Path) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    if not run.is_dir():
        raise InputError(f"run folder not found: {run}; pass --run the calcmine output folder the review.csv came from")
    frames, hashes = {}, {}
    for name in TABLE_FILES:
        path = run / f"{name}.parquet"
        if not path.is_file():
            raise InputError(f"{path}: run table not found; pass --run the calcmine output folder the review.csv came from")
        try:
            frames[name] = pd.read_parquet(path)
        except Exception:  # noqa: BLE001
            raise InputError(f"{path}: cannot be read as Parquet; re-run calcmine run to rebuild the folder") from None
        missing = [c for c in schema.TABLES[name].names if c not in frames[name].columns]
        if missing:
            raise InputError(f"{path}: missing columns {missing[:4]}; re-run calcmine run to rebuild the folder")
        hashes[f"{name}.parquet"] = _sha256(path)
    return frames, hashes


def make_pipeline(seed: int = 0):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("scale", StandardScaler()),
        ("model", LogisticRegression(class_weight="balanced", max_iter=5000, random_state=seed)),
    ])


def _agreement(gold: list[str], pred: list[str]) -> dict:
    """Accuracy, per-class precision/recall (classes reviewed or predicted) and confusion matrix."""
    from pipeline.evaluate import case_agreement

    ids = [str(i) for i in range(len(gold))]
    metrics, _ = case_agreement(dict(zip(ids, gold)), dict(zip(ids, pred)))
    seen = [lab for lab in vocab.LABELS if lab in gold or lab in pred]
    per_class = {lab: {"precision": metrics[f"label {lab}"]["precision"], "recall": metrics[f"label {lab}"]["recall"],
                       "support": gold.count(lab)} for lab in seen}
    matrix = [[sum(1 for g, p in zip(gold, pred) if g == gl and p == pl) for pl in vocab.LABELS] for gl in vocab.LABELS]
    return {"cases": len(gold), "accuracy": metrics["accuracy"], "per_class": per_class,
            "confusion": {"labels": list(vocab.LABELS), "rows": "reviewer_label", "columns": "predicted", "matrix": matrix}}


def cross_validate(features: pd.DataFrame, y: list[str], feature_list: list[str], seed: int = 0,
                   evidence: EvidenceModel | None = None) -> dict:
    """Stratified k-fold predictions of the trained decision (model + no-present-mention rule)."""
    from sklearn.model_selection import StratifiedKFold

    counts = pd.Series(y).value_counts()
    smallest, n_small = str(counts.idxmin()), int(counts.min())
    k = min(5, n_small)
    if k < 2:
        return {"skipped": f"cross-validation needs at least 2 reviewed cases per label; '{smallest}' has {n_small}"}
    evidence = evidence or EvidenceModel.load()
    folds = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    pred = [""] * len(y)
    y_arr = np.asarray(y, dtype=object)
    for train_idx, test_idx in folds.split(np.zeros(len(y)), y_arr):
        fitted = make_pipeline(seed).fit(features.iloc[train_idx][feature_list].to_numpy(dtype="float64"), y_arr[train_idx])
        model = TrainedModel("cv", "0" * 64, fitted, feature_list, evidence, "cross-validation")
        labels, _ = _decide(model, features.iloc[test_idx])
        for i, lab in zip(test_idx, labels):
            pred[i] = lab
    return {"k": k, "stratified": True, "shuffle_seed": seed} | _agreement(list(y), pred)


@dataclass
class TrainResult:
    name: str
    model_path: Path
    card_path: Path
    card_md_path: Path
    card: dict = field(default_factory=dict)

    @property
    def cv(self) -> dict:
        return self.card["cross_validation"]

    def summary(self) -> str:
        c = self.card
        counts = ", ".join(f"{k} {v}" for k, v in c["label_counts"].items())
        lines = [f"calcmine: trained case model {self.name} on {c['n_cases']} reviewed cases ({counts})"]
        cv = self.cv
        if "skipped" in cv:
            lines.append(f"  cross-validation skipped: {cv['skipped']}")
        else:
            lines.append(f"  cross-validation ({cv['k']}-fold, stratified): accuracy {cv['accuracy']:.3f}")
            for lab, m in cv["per_class"].items():
                lines.append(f"    {lab:<18} precision {m['precision']:.3f}  recall {m['recall']:.3f}  (n {m['support']})")
            lines.extend(_confusion_lines(cv["confusion"]))
        base = c["run_labels_vs_reviewers"]
        lines.append(f"  labels of the run ({base['model']}) vs reviewers: accuracy {base['accuracy']:.3f}")
        lines += [f"  model      {self.model_path}", f"  card       {self.card_path}", f"  card (md)  {self.card_md_path}"]
        return "\n".join(lines)


def _confusion_lines(confusion: dict) -> list[str]:
    labels = confusion["labels"]
    out = ["  confusion (rows reviewer_label, columns predicted):", "    " + " " * 18 + "".join(lab.rjust(18) for lab in labels)]
    for lab, row in zip(labels, confusion["matrix"]):
        out.append("    " + lab.ljust(18) + "".join(str(v).rjust(18) for v in row))
    return out


def _card_markdown(card: dict) -> str:
    cv = card["cross_validation"]
    lines = [f"# Case model `{card['name']}`", "",
             f"Trained {card['created_at']} by calcmine {card['versions']['calcmine']} (scikit-learn {card['versions']['scikit-learn']}) "
             f"on {card['n_cases']} reviewed cases: " + ", ".join(f"{k} {v}" for k, v in card["label_counts"].items()) + ".", "",
             f"Model: {card['estimator']}, over {len(card['features'])} features from the evidence model "
             f"`{card['evidence_model']}` (see `pipeline/features.py`). Patients with no present mention are `no_calcification`.", "",
             "## Cross-validation", ""]
    if "skipped" in cv:
        lines.append(f"Skipped: {cv['skipped']}.")
    else:
        lines += [f"{cv['k']}-fold stratified, accuracy **{cv['accuracy']:.3f}**.", "", "| label | precision | recall | n |", "|---|---|---|---|"]
        lines += [f"| {lab} | {m['precision']:.3f} | {m['recall']:.3f} | {m['support']} |" for lab, m in cv["per_class"].items()]
        lines += ["", "```", *[line.strip("\n") for line in _confusion_lines(cv["confusion"])], "```"]
    base = card["run_labels_vs_reviewers"]
    lines += ["", f"Labels of the run ({base['model']}) against the same reviewers: accuracy {base['accuracy']:.3f}.", "",
              "## Training data", "", "| file | SHA-256 |", "|---|---|"]
    lines += [f"| {name} | `{sha}` |" for name, sha in card["training_data"]["files"].items()]
    lines += ["", f"Combined: `{card['training_data']['sha256']}`.", ""]
    return "\n".join(lines)


def train(reviewed_csv: str | Path, run_dir: str | Path | None = None, out_dir: str | Path = "models",
          name: str | None = None, seed: int = 0) -> TrainResult:
    """Fit a case model on reviewers' labels; write ``<name>.skops`` and its model card under ``out_dir``."""
    import sklearn
    import skops
    import skops.io as sio

    from pipeline import __version__
    from pipeline.features import case_features
    from pipeline.io import write_json, write_private

    csv_path = Path(reviewed_csv)
    reviewed = read_reviewed(csv_path, ("patient_id", "label", "reviewer_label"))
    run = Path(run_dir) if run_dir is not None else csv_path.parent
    frames, hashes = _read_run(run)
    known = set(frames["cases"]["patient_id"].astype(str))
    for r in reviewed.itertuples(index=False):
        if r.patient_id not in known:
            raise InputError(f"{csv_path} row {r.row}: patient not in {run / 'cases.parquet'}; pass --run the output folder this review.csv came from")
    files = {csv_path.name: _sha256(csv_path)} | hashes
    data_sha = hashlib.sha256("".join(f"{k}={v}\n" for k, v in files.items()).encode()).hexdigest()
    name = name or f"case-model-{data_sha[:8]}"
    if not _NAME.match(name):
        raise InputError(f"model name '{name[:40]}' is not usable as a file name; use letters, digits, '.', '_' or '-'")
    y = reviewed["reviewer_label"].tolist()
    if len(set(y)) < 2:
        raise InputError(f"{csv_path}: every reviewed case is '{y[0]}'; a model needs at least two different reviewer labels")

    evidence = EvidenceModel.load()
    transparent = CaseClassifier(evidence)
    feats = case_features(frames["cases"], frames["mentions"], frames["conditions"], frames["labs"], transparent)
    feats = feats.loc[reviewed["patient_id"].tolist()]
    feature_list = list(feats.columns)
    cv = cross_validate(feats, y, feature_list, seed, evidence)
    pipeline = make_pipeline(seed).fit(feats[feature_list].to_numpy(dtype="float64"), np.asarray(y, dtype=object))

    run_model = ", ".join(sorted(set(frames["cases"]["model"].dropna().astype(str)))) or "unknown"
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    artifact = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "data_sha256": data_sha,
                "created_at": created, "features": feature_list, "pipeline": pipeline, "evidence_model": evidence.data}
    out = Path(out_dir)
    model_path, card_path, md_path = out / f"{name}.skops", out / f"{name}.json", out / f"{name}.md"
    card = {
        "name": name,
        "version": f"{name}@{data_sha[:12]}",
        "format": f"{FORMAT} v{FORMAT_VERSION}",
        "created_at": created,
        "model_file": model_path.name,
        "estimator": "SimpleImputer(median) + StandardScaler + LogisticRegression(class_weight=balanced)",
        "classes": [str(c) for c in pipeline.classes_],
        "decision": "argmax of predicted probability; no_calcification whenever the patient has no mention asserted present",
        "evidence_model": evidence.version,
        "features": feature_list,
        "n_cases": len(y),
        "label_counts": {lab: y.count(lab) for lab in vocab.LABELS if lab in y},
        "training_data": {"sha256": data_sha, "files": files, "rows_unreviewed_skipped": reviewed.attrs["rows_unreviewed"]},
        "cross_validation": cv,
        "run_labels_vs_reviewers": {"model": run_model} | _agreement(y, reviewed["label"].tolist()),
        "seed": seed,
        "versions": {"calcmine": __version__, "scikit-learn": sklearn.__version__, "skops": skops.__version__,
                     "numpy": np.__version__, "pandas": pd.__version__, "python": platform.python_version()},
    }
    write_private(model_path, sio.dumps(artifact))
    write_json(card, card_path)
    write_private(md_path, _card_markdown(card).encode("utf-8"))
    return TrainResult(name, model_path, card_path, md_path, card)
