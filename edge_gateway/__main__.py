"""`python -m edge_gateway` is the `neoterra` command."""

from edge_gateway.cli import main

raise SystemExit(main())
