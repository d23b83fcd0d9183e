"""calcmine: find calcification in clinical notes and tell dystrophic from metastatic.

Public API for notebooks and scripts (no Prefect needed)::

    import pipeline
    tables = pipeline.process(notes_df)          # mentions, labs, conditions, cases, failures
    nlp = pipeline.build_nlp()                   # the spaCy pipeline
    pipeline.assess_assertions(text, [(start, end)])  # ConText assertion of any span
"""

from __future__ import annotations

from pipeline.assertions import assess_assertions
from pipeline.model import Assertion
from pipeline.nlp import build_nlp, load_nlp
from pipeline.process import Tables, process

__all__ = ["Assertion", "Tables", "assess_assertions", "build_nlp", "load_nlp", "process"]
__version__ = "0.1.0"
