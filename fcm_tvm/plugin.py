"""The TVM plugin: ``import tvm`` calls :func:`autoload` through the ``tvm.backends`` entry point.

It registers the Relax pipeline ``"fcm"`` so that a plain TVM user can write
``tvm.compile(mod, target, relax_pipeline="fcm")``. It must stay cheap and never fail: it only
adds a factory to TVM's pipeline table; fcm-tvm itself is imported when the pipeline is built.
"""

from __future__ import annotations

import sys

PIPELINE_NAME = "fcm"


def autoload() -> None:
    """Register the ``fcm`` pipeline if TVM's compiler is loaded (not in a runtime-only TVM)."""
    pipelines = sys.modules.get("tvm.relax.pipeline")
    if pipelines is None or PIPELINE_NAME in pipelines.PIPELINE_MAP:
        return
    pipelines.PIPELINE_MAP[PIPELINE_NAME] = fcm_pipeline


def fcm_pipeline(fuse: str = "auto", gpu: str | None = None):
    """FCM fusion for the current target, then TVM's default pipeline for that target."""
    from .pipeline import fcm_relax_pipeline

    return fcm_relax_pipeline(fuse=fuse, gpu=gpu)
