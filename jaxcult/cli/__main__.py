"""`python -m jaxcult.cli`: the `jaxcult` command."""

import sys

from jaxcult.cli import main

sys.exit(main())
