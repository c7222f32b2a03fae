"""The Python examples of the guide pages run: docs/handlers.md, failures.md, testing.md and
operations.md.

How a block is marked and run: ``tests/doc_examples.py`` (apps served by a worker, test
modules run by pytest in a subprocess, modules they import). Every Python block of these
pages is tested or says why not; examples assert what they show, so a wrong page fails
here. Another page joins by an entry in ``PAGES``: its name and the fewest tested blocks
it must keep (so that dropping markers does not pass vacuously).
"""

from __future__ import annotations

import doc_examples
import pytest

pytestmark = pytest.mark.anyio

#: page -> the fewest tested examples it must have
PAGES = {
    "handlers.md": 8,
    "failures.md": 5,
    "testing.md": 3,
    "operations.md": 1,
    "scaling.md": 1,
}

BLOCKS = [b for page, n in PAGES.items() for b in doc_examples.blocks(doc_examples.DOCS / page, minimum=n)]


@pytest.mark.parametrize("block", BLOCKS, ids=doc_examples.ids(BLOCKS))
async def test_example(
    block: doc_examples.Block, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    await doc_examples.check(block, redis_url, tmp_path_factory)
