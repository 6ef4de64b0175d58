"""Ending the tasks the service owns (DESIGN §3 rule 4: every task has an owner that cancels
and awaits it, and a cancellation of the owner itself is passed on)."""

from __future__ import annotations

import asyncio
from typing import Any


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait for it to end. If the caller is being cancelled meanwhile, that
    cancellation is re-raised instead of being swallowed with the task's own."""
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if (current := asyncio.current_task()) is not None and current.cancelling():
            raise
