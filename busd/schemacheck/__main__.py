"""`python -m busd.schemacheck check DIR`: the offline checker without the daemon's CLI."""

import sys

from busd.schemacheck import main

sys.exit(main(sys.argv[1:]))
