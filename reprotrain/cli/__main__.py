import sys

from reprotrain.cli import main

sys.exit(main())
