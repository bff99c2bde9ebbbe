"""``python -m fave.cli``: the ``fave`` command."""

import sys

from fave.cli.main import main

sys.exit(main())
