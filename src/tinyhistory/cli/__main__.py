"""``python -m tinyhistory.cli`` (what ``accelerate launch -m`` and the subprocess runs start): the console script."""

import sys

from tinyhistory.cli import main

sys.exit(main())
