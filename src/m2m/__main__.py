"""``python -m m2m``: the same command line as the ``m2m`` script."""

from m2m.cli import main

raise SystemExit(main())
