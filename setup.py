"""Ships the start-up hook ``inductor_sm_override.pth`` at the root of site-packages.

Everything else is in pyproject.toml. The .pth line comes from inductor_sm_override/_hook.py
(loaded by path: building needs neither torch nor wrapt).
"""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = Path(__file__).parent


def _hook_module():
    spec = importlib.util.spec_from_file_location(
        "_iso_hook", HERE / "inductor_sm_override" / "_hook.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithPth(build_py):
    """build_py that also writes the .pth next to the package (wheel and editable)."""

    def run(self):
        super().run()
        hook = _hook_module()
        target = Path(self.build_lib) / hook.PTH_NAME
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(hook.PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode),
                str(Path(self.build_lib) / _hook_module().PTH_NAME)]


class EditableWheelWithPth(editable_wheel):
    """``pip install -e .``: put the same .pth into the editable wheel's root."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        hook = _hook_module()
        (Path(unpacked_wheel) / hook.PTH_NAME).write_text(hook.PTH_LINE)
        return result


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
