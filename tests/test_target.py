"""Targets: what users write, and what TVM gets."""

from types import SimpleNamespace

import pytest
import tvm

from fcm_tvm import TargetError
from fcm_tvm.gpus import all_gpus, find_gpu
from fcm_tvm.target import local_cuda_device, resolve_target


def test_cuda_without_a_gpu_generates_code_for_the_h100():
    resolved = resolve_target("cuda")
    assert resolved.is_cuda and resolved.arch == "sm_90" and resolved.gpu.key == "h100"


@pytest.mark.parametrize(
    ("name", "arch"),
    [
        ("h100", "sm_90"),
        ("a100", "sm_80"),
        ("L4", "sm_89"),
        ("NVIDIA H100 80GB HBM3", "sm_90"),
        ("orin", "sm_87"),
    ],
)
def test_a_gpu_name_selects_its_arch_and_table_row(name, arch):
    resolved = resolve_target(name)
    assert resolved.arch == arch
    assert resolved.gpu == find_gpu(name)


def test_cuda_targets_carry_what_metaschedule_needs():
    attrs = resolve_target("h100").tvm_target.attrs
    for key in ("max_threads_per_block", "max_shared_memory_per_block", "thread_warp_size"):
        assert key in attrs


def test_a_target_dict_is_passed_through_and_completed():
    resolved = resolve_target({"kind": "cuda", "arch": "sm_80"})
    assert resolved.arch == "sm_80" and resolved.gpu.key == "a100"
    assert int(resolved.tvm_target.attrs["max_threads_per_block"]) == 1024


def test_a_json_string_with_a_gpu_key_picks_that_gpu():
    resolved = resolve_target('{"kind": "cuda", "gpu": "l4"}')
    assert resolved.gpu.key == "l4" and resolved.arch == "sm_89"


def test_llvm_and_tvm_target_objects_work():
    assert not resolve_target("llvm").is_cuda
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    assert resolve_target(target).tvm_target is target


@pytest.mark.parametrize(
    ("target", "key"),
    [
        ({"kind": "cuda", "arch": "sm_90"}, "h100"),  # an arch's default GPU (gpus.json arch_defaults)
        ({"kind": "cuda", "arch": "sm_87"}, "orin"),
        ({"kind": "cuda", "arch": "sm_90", "gpu": "h200"}, "h200"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        (tvm.target.Target({"kind": "cuda", "arch": "sm_80"}), "a100"),
    ],
)
def test_the_gpu_a_target_is_planned_for(target, key):
    assert resolve_target(target).gpu.key == key


def on_a_machine_with(monkeypatch, name: str) -> None:
    device = SimpleNamespace(device_name=name, compute_version="8.9")
    monkeypatch.setattr("fcm_tvm.target.local_cuda_device", lambda: device)


def test_cuda_on_a_machine_with_a_gpu_plans_for_that_gpu(monkeypatch):
    on_a_machine_with(monkeypatch, "NVIDIA L4")
    resolved = resolve_target("cuda")
    assert resolved.gpu.key == "l4" and resolved.arch == "sm_89" and resolved.detected


def test_cuda_on_an_unknown_gpu_takes_its_arch_and_the_h100s_figures(monkeypatch):
    on_a_machine_with(monkeypatch, "NVIDIA Voodoo 5")
    resolved = resolve_target("cuda")
    assert resolved.arch == "sm_89" and resolved.gpu.key == "h100"


def test_no_cuda_runtime_is_no_local_gpu(monkeypatch):
    def no_runtime(index=0):
        raise RuntimeError("Device API cuda is not enabled")

    monkeypatch.setattr(tvm, "cuda", no_runtime)
    assert local_cuda_device() is None
    assert resolve_target("cuda").gpu.key == "h100"


@pytest.mark.parametrize("bad", ["foo", "cuda9", {"kind": "nope"}, {"kind": "cuda", "gpu": "voodoo"}, 42])
def test_unknown_targets_are_one_clear_error(bad):
    with pytest.raises(TargetError) as error:
        resolve_target(bad)
    assert "\n" not in str(error.value)


def test_every_gpu_in_the_table_has_positive_figures():
    for gpu in all_gpus().values():
        assert gpu.arch.startswith("sm_")
        assert min(gpu.sm_count, gpu.l2_bytes, gpu.smem_per_block, gpu.dram_bandwidth_gbs) > 0
        assert gpu.smem_per_block <= gpu.smem_per_sm
