from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLD = ROOT / "tests" / "gold"

os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session")
def nlp():
    from pipeline.process import default_nlp

    return default_nlp()


@pytest.fixture(scope="session")
def gold_dir() -> Path:
    return GOLD


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
