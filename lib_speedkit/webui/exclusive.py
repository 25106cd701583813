"""A REST route's work run exclusively, as the WebUI runs a generation: with its queue lock held
(never beside a generation or another such job) and as a job of `shared.state` (progress bar,
Interrupt); the result sent as strict JSON. The bench and precompile routes use it."""

from __future__ import annotations

from collections.abc import Callable

from modules import call_queue, shared

from ..bench.stats import finite_json


def holding_the_queue(job: str, label: str, work: Callable[[], dict], refused: type[Exception]) -> dict:
    """`work()` under the queue lock as job `job`; `refused` errors answer 409 with `label`."""
    from fastapi import HTTPException

    with call_queue.queue_lock:
        shared.state.begin(job=job)
        try:
            return finite_json(work())
        except refused as error:
            raise HTTPException(status_code=409, detail=f"{label}: {error}") from None
        finally:
            shared.state.end()
