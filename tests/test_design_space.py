"""Each tuning task gets a design space MetaSchedule can build (fp16 squeeze-excitation convs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import tvm
from tvm import te

from fcm_tvm import design_space
from fcm_tvm.design_space import TARGET_RULES, space_for
from fcm_tvm.target import resolve_target

H200 = resolve_target("h200").tvm_target


def conv1x1_task(in_channels: int, out_channels: int, size: int, dtype: str = "float16"):
    """A task as ``extract_tasks`` gives it: a 1x1 convolution's PrimFunc and a name."""
    x = te.placeholder((1, in_channels, size, size), dtype, name="x")
    w = te.placeholder((out_channels, in_channels, 1, 1), dtype, name="w")
    rc = te.reduce_axis((0, in_channels), name="rc")
    y = te.compute(
        (1, out_channels, size, size),
        lambda n, f, i, j: te.sum(x[n, rc, i, j] * w[f, rc, 0, 0], axis=rc),
        name="conv",
    )
    module = tvm.IRModule({"main": te.create_prim_func([x, w, y]).with_attr("global_symbol", "main")})
    return SimpleNamespace(dispatched=[module], task_name=f"conv_{in_channels}_{out_channels}_{size}")


@pytest.mark.parametrize(
    "task", [conv1x1_task(64, 128, 56), conv1x1_task(72, 24, 1, "float32")], ids=["fp16 56x56", "fp32 1x1"]
)
def test_a_task_whose_space_builds_keeps_the_targets_rules(task) -> None:
    assert space_for(task, H200) == TARGET_RULES


def test_an_fp16_squeeze_excitation_conv_is_tuned_without_tensor_cores() -> None:
    # a 72->24 1x1 conv on a 1x1 map: the tensor-core rules fail with "Back optional access"
    space = space_for(conv1x1_task(72, 24, 1), H200)
    assert space not in (None, TARGET_RULES)
    assert "MultiLevelTilingTensorCore" not in str(space) and "MultiLevelTiling" in str(space)


def test_a_task_without_any_buildable_space_is_left_to_its_default(monkeypatch) -> None:
    monkeypatch.setattr(design_space, "_space_error", lambda task, target, space: "no luck")
    assert space_for(conv1x1_task(64, 128, 56), H200) is None
