"""``python -m pipelines.cli``: the ``h2crop`` command."""

import sys

from pipelines.cli.main import main

sys.exit(main())
