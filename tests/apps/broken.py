"""A module that fails to import (for the CLI error tests)."""

raise RuntimeError("boom at import time")
