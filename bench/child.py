"""Entry point of one measured run: ``python -m bench.child SPEC.json RESULT.json``.

The harness starts a fresh interpreter for every run, so each starts cold
(no data cached in the process, no memory left over from a previous case)
and its peak RSS is its own.
"""

from __future__ import annotations

import json
import resource
import sys
import traceback


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    with open(spec_path) as f:
        spec = json.load(f)
    from .cases import CASES

    before = _cpu()
    try:
        result = CASES[spec["case"]](spec)
        result["ok"] = True
        # CPU time of this process and its reaped workers over the case (imports excluded)
        result["cpu_seconds"] = round(_cpu() - before, 3)
    except Exception as exc:  # noqa: BLE001 - reported to the harness, which marks the case failed
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    # the case process's own peak: VmHWM belongs to this address space, so unlike ru_maxrss
    # (which Linux carries across exec) it owes nothing to the harness that started us
    result["self_peak_kb"] = _vm_hwm_kb()
    # the largest peak of a worker this process started and reaped (a maximum, not a sum)
    result["workers_maxrss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0 if result["ok"] else 1


def _vm_hwm_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
