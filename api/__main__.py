"""``python -m metaedge``: the ``metaedge`` command."""

import sys

from metaedge.sdk.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
