"""Suite-wide settings: Prefect runs ephemeral, quiet and isolated in a temporary PREFECT_HOME."""

from __future__ import annotations

import os
import tempfile

# Before anything imports prefect: a private home (database) per test session, no telemetry,
# a startup timeout that suits a loaded 2-core machine.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="maskgrpo-prefect-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
