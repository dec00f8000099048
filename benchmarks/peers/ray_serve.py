"""Ray Serve 2.60 as its documentation advises for this job: a deployment behind Serve's
HTTP proxy with a FastAPI ingress, the model loaded in the replica's constructor, and
`@serve.batch` (max batch 32) around the model call
(https://docs.ray.io/en/latest/serve/advanced-guides/dyn-req-batch.html). Each request's
image is decoded in a worker thread so decoding overlaps, and the batch holds arrays.

    PEER_ARTIFACT=models/default python benchmarks/peers/ray_serve.py --port 8103
"""

import argparse
import asyncio
import os
import time
from typing import Any

import numpy as np
import ray
from common import Model
from fastapi import FastAPI, Request
from ray import serve

app = FastAPI()


@serve.deployment(max_ongoing_requests=64)
@serve.ingress(app)
class Tagger:
    def __init__(self, artifact: str) -> None:
        self.model = Model(artifact)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def run(self, arrays: list[np.ndarray]) -> list[dict[str, Any]]:
        scores = self.model.predict(np.stack(arrays))
        return [{"tags": self.model.tags(s)} for s in scores]

    @app.post("/tag")
    async def tag(self, request: Request) -> dict[str, Any]:
        array = await asyncio.to_thread(self.model.preprocess, await request.body())
        return await self.run(array)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8103)
    args = parser.parse_args()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(
        Tagger.bind(  # type: ignore[attr-defined]
            os.path.abspath(os.environ["PEER_ARTIFACT"])
        ),
        route_prefix="/",
    )
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
