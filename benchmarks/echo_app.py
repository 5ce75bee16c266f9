"""Baselines for the decide benchmark: a bare FastAPI echo with a pydantic body."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Body(BaseModel):
    customer_id: str
    context: dict[str, Any] = {}


@app.post("/echo")
async def echo(body: Body) -> Body:
    return body


@app.get("/readyz")
async def ready() -> dict[str, str]:
    return {"status": "ready"}
