"""Network tests use tiny models: one intra-op thread is much faster than several on a shared CPU
(thread oversubscription made a tiny training step 10-20x slower with 2 threads on a loaded 2-core box)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
