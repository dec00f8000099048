"""The server a user writes in an afternoon: FastAPI + uvicorn (one worker), the raw image
as the request body, decode and ONNX Runtime at batch 1 in FastAPI's thread pool.

    PEER_ARTIFACT=models/default uvicorn --app-dir benchmarks/peers naive:app --port 8101
"""

from __future__ import annotations

from typing import Any

import numpy as np
from common import Model
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

app = FastAPI()
model = Model()


def _tag(data: bytes) -> dict[str, Any]:
    scores = model.predict(model.preprocess(data)[np.newaxis])[0]
    return {"tags": model.tags(scores)}


@app.post("/tag")
async def tag(request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_tag, await request.body())
