"""BentoML 1.4 as its documentation advises for this job: one Service class, the model
loaded in `__init__`, an API with adaptive batching (`batchable=True`, max batch 32; the
dispatcher picks the window; max_latency_ms set high so that no request is refused) taking
images, one worker per process
(https://docs.bentoml.com/en/latest/guides/adaptive-batching.html). The batch is decoded
with a thread per core before the model runs, as a user who profiled it would.

    PEER_ARTIFACT=models/default bentoml serve bento_service:Tagger --port 8102 \\
        --working-dir benchmarks/peers

Requests are multipart/form-data with the image in the field `images`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bentoml
import numpy as np
from common import Model
from PIL.Image import Image


@bentoml.service(workers=1, traffic={"timeout": 60, "max_concurrency": 256})
class Tagger:
    def __init__(self) -> None:
        self.model = Model()
        self.pool = ThreadPoolExecutor(os.cpu_count() or 1)

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=10_000)
    def tag(self, images: list[Image]) -> list[dict[str, Any]]:
        batch = np.stack(list(self.pool.map(self.model.from_pil, images)))
        return [{"tags": self.model.tags(s)} for s in self.model.predict(batch)]
