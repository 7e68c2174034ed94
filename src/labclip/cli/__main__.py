"""``python -m labclip.cli``: the ``labclip`` command."""

import sys

from labclip.cli import main

sys.exit(main())
