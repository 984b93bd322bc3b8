"""`python -m train …`: see train/loop.py, or `python -m train --help`."""

import sys

from train.loop import main

sys.exit(main())
