"""The environment-variable start-up hook.

The package ships ``inductor_sm_override.pth`` (its one line is ``PTH_LINE``) into
site-packages. At interpreter start that line checks, without importing anything, whether
any ``INDUCTOR_SM_OVERRIDE*`` variable (or a near miss of one) is set; if none is, it does
nothing else. If one is, it puts a tiny finder (a function) first on ``sys.meta_path``
that waits for ``import torch`` (one string comparison per import) and then removes itself,
imports this module and registers wrapt post-import hooks (``wrapt.register_post_import_hook``):

- on ``torch._inductor.utils`` (the module that holds the SM gate): the variables are
  parsed and validated; a bad value prints one line (or raises with ``..._STRICT=1``);
- on ``torch._inductor.compile_fx`` (Inductor's compile entry point, imported before any
  compile): the process-wide settings layer and its patches are installed. Installing
  them from the utils hook is not possible: utils is first imported while
  ``torch._dynamo`` is still half-initialised.

Neither torch nor wrapt is imported at start-up, and a program that never imports torch
never imports either.

This module imports only ``os`` and ``sys`` at import time; it must never raise at
interpreter start.
"""

from __future__ import annotations

import os
import sys

PTH_NAME = "inductor_sm_override.pth"
GATE_MODULE = "torch._inductor.utils"
ENTRY_MODULE = "torch._inductor.compile_fx"

# A function object is the cheapest finder to build (a class costs ~70 us more at start-up):
# sys.meta_path only needs an object with a find_spec attribute.
_BOOT = (
    "import sys\n"
    "def _inductor_sm_override_boot(name, path=None, target=None):\n"
    " if name == 'torch':\n"
    "  sys.meta_path[:] = [f for f in sys.meta_path\n"
    "                      if getattr(f, '__name__', '') != '_inductor_sm_override_boot']\n"
    "  try:\n"
    "   import inductor_sm_override._hook as hook\n"
    "   hook.on_torch_import()\n"
    "  except Exception:\n"
    "   pass\n"
    "_inductor_sm_override_boot.find_spec = _inductor_sm_override_boot\n"
    "if 'torch' in sys.modules:\n"
    " _inductor_sm_override_boot('torch')\n"
    "else:\n"
    " sys.meta_path.insert(0, _inductor_sm_override_boot)\n"
)

_GUARDED = "try:\n" + "".join(f" {line}\n" for line in _BOOT.splitlines()) + (
    "except Exception:\n pass\n"
)

# The single line of the shipped .pth file (site.py executes lines that start with import).
# The test: "INDUCTORSM" or "SMOVER" in the joined names, upper-cased, without "_" (near
# misses too: core.settings.near_misses); a false positive only arms the finder.
PTH_LINE = (
    f"import os; exec({_GUARDED!r}) "
    "if 'INDUCTORSM' in (_iso := ' '.join(os.environ).upper().replace('_', '')) "
    "or 'SMOVER' in _iso else None\n"
)


_registered = False


def on_torch_import() -> None:
    """Called once when ``torch`` is first imported: register the post-import hook."""
    global _registered
    if _registered:
        return
    _registered = True
    import wrapt

    wrapt.register_post_import_hook(_on_gate_module, GATE_MODULE)
    wrapt.register_post_import_hook(_on_entry_module, ENTRY_MODULE)


def _on_gate_module(module: object) -> None:
    """``torch._inductor.utils`` was imported: validate the variables (one line or raise)."""
    from .api.env import check_env

    check_env(os.environ, stream=sys.stderr)


def _on_entry_module(module: object) -> None:
    """Inductor's compile entry point was imported: install the env layer."""
    from .api.env import activate_from_env

    activate_from_env(os.environ, stream=sys.stderr, report_errors=False)
