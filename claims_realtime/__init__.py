"""claims-realtime: the composition root (app factory in `app`, settings, CLI)."""

import warnings

# Connexion imports starlette.testclient at import time, which warns that it prefers httpx2;
# we never use that test client at run time, so the warning is noise on every CLI command.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
