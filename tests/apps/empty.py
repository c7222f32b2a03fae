"""An App without handlers (for the CLI error tests)."""

from streamflow import App

app = App()
