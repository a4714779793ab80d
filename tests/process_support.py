"""Child processes for tests that need real ones (Celery workers, a served sandbox)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parent


@contextmanager
def process(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in the tests' folder (output appended to ``log``) and end it on the
    way out if it is still running: terminate, then kill after 20 s."""
    with open(log, "ab") as output:
        proc = subprocess.Popen(command, env=env, cwd=TESTS, stdout=output, stderr=output)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
