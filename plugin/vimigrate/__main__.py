"""``python -m vimigrate``: the command line without the console script."""

from .cli import main

raise SystemExit(main())
