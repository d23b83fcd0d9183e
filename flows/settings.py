"""Prefect settings calcmine needs before Prefect is imported: local home, no analytics."""

from __future__ import annotations

import os
from pathlib import Path


def configure_prefect() -> None:
    """Keep Prefect offline and local unless the user configured otherwise.

    - ``PREFECT_HOME``: ``./.prefect`` (writable, inside the project, ignored by git);
    - analytics and telemetry off; the temporary server starts without its UI;
    - task results are not persisted (tasks pass file paths, not note text, anyway).
    """
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_UI_ENABLED", "false")
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
