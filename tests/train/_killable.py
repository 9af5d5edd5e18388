"""Run ``knapsack-rl train`` in this process, SIGKILLing itself inside a chosen atomic write.

Used by test_kill_resume.py as a real subprocess: ``KILL_FILE=checkpoint.pt KILL_NTH=2`` kills the
process on the 2nd replace of a file of that name, after its temporary file was fully written and
fsynced but before the rename (a crash "inside the checkpoint write"); ``KILL_FILE=metrics.jsonl``
kills it inside the log rewrite of a resume. Without KILL_FILE it just trains.
"""

import os
import signal
import sys

from knapsack_rl.cli import main

_real_replace = os.replace
_calls = {"n": 0}


def _replace(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == os.environ.get("KILL_FILE"):
        _calls["n"] += 1
        if _calls["n"] == int(os.environ.get("KILL_NTH", "1")):
            os.kill(os.getpid(), signal.SIGKILL)
    return _real_replace(src, dst, *args, **kwargs)


os.replace = _replace
if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
