"""``python -m netshrink.cli`` (and ``torchrun ... -m netshrink.cli train``): the ``netshrink`` command."""

import sys

from netshrink.cli import main

sys.exit(main())
