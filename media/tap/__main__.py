"""``python -m media.tap --redis URL --hub-url ws://...``: the same as ``connvo-rtc tap``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
