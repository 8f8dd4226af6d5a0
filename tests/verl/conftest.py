"""The verl lane (``make test-verl``, its own venv): skipped from collection where verl is not installed."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("verl") is not None else ["test_*.py"]
