"""Fixtures of the verbs suite (the harness itself is in verbs_harness.py)."""

from verbs_harness import env, soft_env  # noqa: F401  (pytest fixtures)
