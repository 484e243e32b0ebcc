"""The `auralsam2` console script: a Ctrl-C is one line even while the CLI is still importing torch."""
from __future__ import annotations

import signal
import sys

DEBUG_FLAG = "--debug"
EXIT_INTERRUPTED = 130


def main() -> int:
    """Import the CLI (seconds, for torch) and run it; Ctrl-C at any moment exits 130 without a traceback."""
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        if DEBUG_FLAG in sys.argv:
            raise
        print("auralsam2: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    code = run()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a Ctrl-C while the interpreter shuts down just ends it
    return code


if __name__ == "__main__":
    sys.exit(main())
