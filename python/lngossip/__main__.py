"""``python -m lngossip``: the same as the ``lngossip`` command."""

from lngossip.cli import main

raise SystemExit(main())
