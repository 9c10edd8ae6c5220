"""`python -m diffusion_client ...` is the `diffusion` command."""

import sys

from diffusion_client.cli import main

sys.exit(main())
