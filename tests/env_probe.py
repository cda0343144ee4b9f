"""Run in subprocesses by test_env_hook.py. Prints one JSON line of what it saw.

    python env_probe.py [--exit N] [--child] [--no-torch] [--rank-file DIR]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ARGS = sys.argv[1:]
AT_START = {"torch": "torch" in sys.modules, "wrapt": "wrapt" in sys.modules}


def main() -> int:
    report = {"at_start": AT_START}
    if "--no-torch" not in ARGS:
        import torch._inductor.compile_fx  # noqa: F401 - Inductor's entry point: env layer goes in
        import torch._inductor.utils as utils

        import inductor_sm_override as iso
        from inductor_sm_override.testing import fake_cuda_device

        with fake_cuda_device(46):
            report["gate"] = utils.is_big_gpu(0)
            with iso.override(min_sms=64):
                report["nested_64"] = utils.is_big_gpu(0)
            report["after_nested"] = utils.is_big_gpu(0)
        status = iso.status()
        report["patched"] = status["patched"]
        report["base"] = status["base"]
    else:
        report["torch_imported"] = "torch" in sys.modules
        report["wrapt_imported"] = "wrapt" in sys.modules
    if "--child" in ARGS:
        out = subprocess.run([sys.executable, __file__], capture_output=True, text=True)
        report["child"] = json.loads(out.stdout.strip().splitlines()[-1])
    if "--rank-file" in ARGS:
        directory = ARGS[ARGS.index("--rank-file") + 1]
        rank = os.environ.get("RANK", "?")
        with open(os.path.join(directory, f"rank{rank}.json"), "w") as handle:
            json.dump(report, handle)
    print(json.dumps(report))
    return int(ARGS[ARGS.index("--exit") + 1]) if "--exit" in ARGS else 0


if __name__ == "__main__":
    sys.exit(main())
