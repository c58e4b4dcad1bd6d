import sys

from ibstream.cli import main

sys.exit(main())
