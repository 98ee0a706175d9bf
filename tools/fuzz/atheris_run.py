"""Coverage-guided fuzzing with atheris (libFuzzer) of one target from tools.fuzz.targets.

    python -m tools.fuzz.atheris_run pdu --runs 200000
    python -m tools.fuzz.atheris_run login --runs 20000 -- -max_len=2048

Any crash (an exception other than the module's typed errors, or a FuzzFailure) stops the
run with the input saved by libFuzzer as ``crash-*``. Needs ``pip install atheris``.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz.atheris_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=("pdu", "text", "iser", "login"))
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags after --")
    args = parser.parse_args(argv)
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    logging.disable(logging.CRITICAL)  # refusals are logged by design; keep the fuzzer fast
    with atheris.instrument_imports():
        import datamover.pdu.codec  # noqa: F401
        import datamover.pdu.text  # noqa: F401
        import datamover.target.login  # noqa: F401
        import datamover.negotiation.engine  # noqa: F401
        import datamover.auth.chap  # noqa: F401
        import datamover_iser.header  # noqa: F401
        from tools.fuzz.targets import TARGETS
    target = TARGETS[args.target]
    atheris.Setup([sys.argv[0], f"-runs={args.runs}", *args.libfuzzer], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
