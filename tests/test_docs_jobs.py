"""The Python examples of docs/jobs.md run, against a private server.

How a block is marked and run: ``tests/doc_examples.py``. On this page every example is
an app (``<!-- tested -->``): the code up to ``# with a worker running`` defines an
``App`` named ``app`` and its tasks, the rest runs while a worker serves it (top-level
``await`` allowed; without one it runs in a plain thread, as sync code in a web view
would). Examples assert what they show, so a wrong page fails here.
"""

from __future__ import annotations

import doc_examples
import pytest

pytestmark = pytest.mark.anyio

BLOCKS = doc_examples.blocks(doc_examples.DOCS / "jobs.md", minimum=10)


@pytest.mark.parametrize("block", BLOCKS, ids=doc_examples.ids(BLOCKS))
async def test_example(
    block: doc_examples.Block, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    await doc_examples.check(block, redis_url, tmp_path_factory)
