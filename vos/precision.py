"""The model runs as configured, whatever autocast block its caller is in.

Code written for SAM 2 and its real-time camera predictor wraps its calls in
``torch.autocast(..., dtype=torch.bfloat16)``; here that would silently change exact mode's
masks (and the dtype of the states the predictors keep). Reduced precision is the model's own
fast mode (``model.fast_mode``), not the caller's block. Both SAM 2-style predictors
(``vos.video_predictor``, ``vos.camera_predictor``) run their public methods under
:func:`as_configured`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch


@contextlib.contextmanager
def as_configured() -> Iterator[None]:
    """Autocast off (CPU, and CUDA where there is one) and inference mode on."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        stack.enter_context(torch.inference_mode())
        yield


def runs_as_configured(method: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a method to run under :func:`as_configured`."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with as_configured():
            return method(*args, **kwargs)

    return wrapper
