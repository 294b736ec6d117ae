"""``python -m metaedge``: the ``metaedge`` command."""

import sys

from metaedge.sdk.cli.main import main

sys.exit(main())
