"""`python -m bridge`: the same CLI as the `bridge` script, immune to iproute2's /usr/sbin/bridge."""

import sys

from bridge.cli import main

sys.exit(main())
