"""`python -m electra_np ...` is the `electra-np` command."""

import sys

from .cli.main import main

sys.exit(main())
