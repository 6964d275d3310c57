"""The naive baseline: a plain FastAPI handler that runs the TorchScript model per request.

    python -m bench.naive_server --model model_repository/margipose-lite/1/model.pt --port 8090

What a first version of a pose service looks like: `POST /v1/predict` takes the image bytes and
the same `boxes` query parameter as the gateway, and for each box decodes, cuts the same crop
(`service.imaging`, `posecontract.geometry`) and calls the model on it, one person at a time,
inside FastAPI's thread pool. No batching, no queue bound, no draft decoding, no deadlines. It
answers the normalised coordinates only, so it does less work per person than the gateway.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from posecontract.geometry import Intrinsics, make_crop
from posecontract.layout import INPUT_SIZE
from service.core import CROP_MARGIN
from service.imaging import crop_for_model, decode_image


def create_app(model_path: str, threads: int) -> FastAPI:
    torch.set_num_threads(threads)
    model = torch.jit.load(model_path).eval()
    app = FastAPI()

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict:
        # The work runs in FastAPI's thread pool, as a plain `def` handler's would.
        data = await request.body()
        boxes = json.loads(request.query_params.get("boxes", "[]"))
        return await run_in_threadpool(_predict, data, request.headers.get("content-type"),
                                       boxes)

    def _predict(data: bytes, content_type: str | None, boxes: list) -> dict:
        decoded = decode_image(data, content_type=content_type, max_bytes=len(data),
                               max_pixels=10**9, min_detail=None)
        camera = Intrinsics.from_fov(decoded.width, decoded.height, 60.0)
        persons = []
        for x, y, w, h in boxes or [[0, 0, decoded.width, decoded.height]]:
            crop = make_crop(camera, (x + w / 2, y + h / 2), CROP_MARGIN * max(w, h), INPUT_SIZE)
            pixels = crop_for_model(decoded, crop).transpose(2, 0, 1)
            with torch.inference_mode():
                coords = model(torch.from_numpy(np.ascontiguousarray(pixels))[None])[0]
            persons.append({"normalised": coords[0].tolist()})
        return {"persons": persons}

    return app


def main() -> None:
    p = argparse.ArgumentParser(description="Naive per-request FastAPI pose server (baseline).")
    p.add_argument("--model", required=True, help="TorchScript model.pt")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = p.parse_args()
    uvicorn.run(create_app(args.model, args.threads), host="127.0.0.1", port=args.port,
                log_level="warning")


if __name__ == "__main__":
    main()
