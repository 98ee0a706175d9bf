"""Fuzzing: one-input targets shared by the hypothesis tests and the atheris runner
(``python -m tools.fuzz.atheris_run``), and the live-target PDU flood
(``python -m tools.fuzz.flood``)."""
