"""What the benchmark scripts share: a measurement in a fresh process of its own (its own peak
memory, no state left by another recipe or engine), answered as one JSON line on stdout."""

import json
import resource
import subprocess
import sys
import time


def in_child(command: list[str], env: dict | None = None) -> dict:
    """Runs `python <command>` (a script and its flags, or `-m module ...`) and returns the JSON
    object of its last stdout line (`answer`; none: {}) with `process_seconds`; a failed child
    raises with the end of its stderr."""
    started = time.time()
    result = subprocess.run([sys.executable, *command], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed: {result.stderr[-2000:]}")
    last = (result.stdout.strip().splitlines() or [""])[-1]
    answer = json.loads(last) if last.startswith("{") else {}
    return {**answer, "process_seconds": time.time() - started}


def answer(figures: dict):
    """A child's answer to `in_child`: its last line."""
    print(json.dumps(figures), flush=True)


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
