"""Small importable apps run by the subprocess tests (``python -m streamflow run tests.apps.X:app``)."""
