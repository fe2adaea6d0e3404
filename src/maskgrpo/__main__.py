"""``python -m maskgrpo``: the same command line as the ``maskgrpo`` script (cli.py)."""

from maskgrpo.cli import main

raise SystemExit(main())
