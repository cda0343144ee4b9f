"""``python -m inductor_sm_override`` is the ``inductor-sm-override`` command."""

import sys

from .tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
