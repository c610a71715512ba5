"""``python -m km2pg.cli``: the ``km2pg`` command."""

import sys

from km2pg.cli.commands import main

sys.exit(main())
