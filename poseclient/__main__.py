"""`python -m poseclient`: the `margipose` command line."""

import sys

from poseclient.cli import main

sys.exit(main())
