"""``python -m labclip``: the ``labclip`` command."""

import sys

from .cli import main

sys.exit(main())
