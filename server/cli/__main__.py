"""`python -m arbiter.server.cli`, the same program as the `arbiter` command."""

import sys

from arbiter.server.cli.main import main

sys.exit(main())
