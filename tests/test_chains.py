"""The per-layer benchmark's unfused chains compute the FCM's function, in both stock forms, and
its graph-clock chains run every repeat inside one CUDA graph."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from fcm_tvm.benchmarks.chains import graph_timed_module, unfused_module
from fcm_tvm.gpus import get_gpu
from fcm_tvm.pipeline import stock_pipeline
from fcm_tvm.schedules import Depthwise, FcmSpec, Pointwise
from fcm_tvm.target import cuda_target

from .test_schedules import assert_matches_reference, fcm_reference, random_inputs

SPECS = [
    FcmSpec(1, 8, 12, 12, (Depthwise(3, 1, None, "relu6"), Pointwise(16, "none"))),
    FcmSpec(2, 6, 9, 11, (Pointwise(12, "hardswish"), Depthwise(5, 2, None, "silu"))),
    FcmSpec(
        1, 8, 10, 10, (Pointwise(24, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(8, "none")), True
    ),
    FcmSpec(1, 8, 12, 12, (Depthwise(3, 2, None, "relu"), Pointwise(16, "relu")), dtype="float16"),
]


@pytest.mark.parametrize("batchnorm", [True, False], ids=["batchnorm", "bias"])
def test_each_unfused_chain_matches_the_float64_definition(batchnorm: bool, rng: np.random.Generator):
    executable = tvm.compile(unfused_module(SPECS, batchnorm=batchnorm), "llvm")
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    for index, spec in enumerate(SPECS):
        inputs = random_inputs(spec, rng)
        output = vm[f"chain_{index}"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()
        assert output.dtype == np.dtype(spec.dtype) and output.shape == spec.output.as_tuple()
        assert_matches_reference(spec, output, inputs)


def test_the_batchnorm_form_keeps_a_batch_norm_per_convolution():
    text = unfused_module(SPECS[:1]).script()
    assert text.count("R.nn.batch_norm(") == 2 and text.count("R.nn.conv2d(") == 2
    assert "R.nn.batch_norm(" not in unfused_module(SPECS[:1], batchnorm=False).script()


REPEATS = 3


def test_graph_timed_chains_run_each_repeat_on_its_own_input(rng: np.random.Generator):
    """The FCM and the stock chain, each repeated on fresh inputs with shared weights, give the
    probe the first element of every repeat's output (on the CPU: the wiring, not the graph)."""
    pipeline = stock_pipeline(tvm.target.Target("llvm"))
    executable = tvm.compile(
        graph_timed_module(SPECS[:3], [None] * 3, "llvm", REPEATS), "llvm", relax_pipeline=pipeline
    )
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    for index, spec in enumerate(SPECS[:3]):
        draws = [random_inputs(spec, rng) for _ in range(REPEATS)]
        arguments = [tvm.runtime.tensor(a) for a in [*(d[0] for d in draws), *draws[0][1:]]]
        expected = [fcm_reference(spec, [draw[0], *draws[0][1:]])[0, 0, 0, 0] for draw in draws]
        for function in (f"fcm_{index}", f"chain_{index}"):
            np.testing.assert_allclose(vm[function](*arguments).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_graph_timed_chains_are_captured_whole_in_one_cuda_graph():
    """All repeats in one captured graph; only the probe that keeps their outputs runs outside."""
    target = cuda_target(get_gpu("h100"))
    with tvm.transform.PassContext(opt_level=3, config={"relax.backend.use_cuda_graph": True}):
        executable = tvm.compile(
            graph_timed_module(SPECS[:1], [None], target, REPEATS),
            target,
            relax_pipeline=stock_pipeline(target),
        )
    functions = vm_functions(executable.as_text())
    for name in ("fcm_0", "chain_0"):
        assert functions[name].count("vm.builtin.cuda_graph.run_or_capture") == 1
        assert f"call  probe_{name} " in functions[name]
        captured = functions[f"{name}_cuda_graph_capture"]
        assert "call  probe_" not in captured
    assert functions["fcm_0_cuda_graph_capture"].count("call  fcm_kernel_0 ") == REPEATS


def test_graph_timed_fcms_alone_build_no_stock_chains():
    """What ``layers --variants fcm`` times in a graph: the FCMs, without the stock builds."""
    module = graph_timed_module(SPECS[:2], [None] * 2, "llvm", REPEATS, stock=False)
    names = {gv.name_hint for gv in module.functions}
    assert {"fcm_0", "fcm_1"} <= names and not any(name.startswith("chain_") for name in names)


def vm_functions(text: str) -> dict[str, str]:
    """The VM executable's text, split into its functions."""
    functions, name = {}, None
    for line in text.splitlines():
        if line.startswith("@") and line.endswith(":"):
            name = line[1:-1]
            functions[name] = ""
        elif name is not None:
            functions[name] += line + "\n"
    return functions


def test_an_unknown_variant_is_one_clear_error(tmp_path, capsys):
    from fcm_tvm.benchmarks.layers import main

    with pytest.raises(SystemExit):
        main(["--variants", "fcm,cudnn", "--out", str(tmp_path / "out")])
    assert "--variants: unknown cudnn; known: fcm, stock" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_unknown_chain_kind_is_one_clear_error(tmp_path, capsys):
    from fcm_tvm.benchmarks.layers import main

    with pytest.raises(SystemExit):
        main(["--kinds", "dw_pw,pw_pw", "--out", str(tmp_path / "out")])
    assert "--kinds: unknown pw_pw; known: dw_pw, pw_dw, pw_dw_pw" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model", "precision"),
    [
        ("efficientnet_b0", "fp16"),
        ("mobilenet_v3_large", "fp32"),
        ("mnasnet1_0", "fp16"),
        ("mobilenet_v2", "fp32"),
    ],
)
def test_every_stock_chain_kernel_is_a_workload_of_the_whole_model_so_its_tuned_record_applies(
    model: str, precision: str
):
    """The layer benchmark's tuned stock chain replays the model's database: only where each of
    its kernels is structurally one of the model's tasks (same BatchNorm epsilon; SiLU, HardSwish
    and ReLU6 as the importer writes them) does a tuned kernel replace dlight's."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from fcm_tvm.benchmarks.chains import LayerCase, batchnorm_epsilon, case_model, model_chains
    from fcm_tvm.pipeline import tuning_passes
    from fcm_tvm.tuning import tuning_module

    case = LayerCase(model, 1, precision)
    whole, target = tuning_module(case_model(case), "h200", fuse="none")
    workloads = {
        tvm_ffi.structural_hash(t.dispatched[0]) for t in ms.relax_integration.extract_tasks(whole, target)
    }
    specs, epsilon = [spec for spec, _ in model_chains(case)], batchnorm_epsilon(case_model(case))
    for chains in (  # as timed by a VM call, and inside a CUDA graph (the FCMs and probes aside)
        unfused_module(specs, epsilon=epsilon),
        graph_timed_module(specs, [None] * len(specs), target, REPEATS, epsilon=epsilon),
    ):
        with target:
            chains = tvm.transform.Sequential(tuning_passes(target))(chains)
        stock = ms.relax_integration.extract_tasks(chains, target)
        tasks = [t for t in stock if not t.task_name.startswith(("fcm_kernel", "probe"))]
        unknown = [t.task_name for t in tasks if tvm_ffi.structural_hash(t.dispatched[0]) not in workloads]
        assert tasks and unknown == []


def test_a_batchnorm_chain_with_the_models_epsilon_computes_the_same_function(rng: np.random.Generator):
    executable = tvm.compile(unfused_module(SPECS[1:2], epsilon=1e-3), "llvm")
    inputs = random_inputs(SPECS[1], rng)
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    assert_matches_reference(
        SPECS[1], vm["chain_0"](*[tvm.runtime.tensor(a) for a in inputs]).numpy(), inputs
    )


def test_beyond_l2_keeps_the_chains_whose_intermediate_outgrows_the_l2():
    from fcm_tvm.benchmarks.chains import LayerCase, intermediate_bytes, model_chains
    from fcm_tvm.benchmarks.layers import is_selected

    h100 = get_gpu("h100")
    chains = [spec for spec, _ in model_chains(LayerCase("mobilenet_v2", 32, "fp32"))]
    kept = [spec for spec in chains if is_selected(spec, h100, beyond_l2=True)]
    expanded_112, expanded_56 = 32 * 96 * 112 * 112 * 4, 32 * 144 * 56 * 56 * 4
    assert [intermediate_bytes(spec) for spec in kept] == [expanded_112, expanded_56, expanded_56]
    assert all(intermediate_bytes(spec) <= h100.l2_bytes for spec in chains if spec not in kept)


def test_a_profile_run_stays_in_one_process(tmp_path, capsys):
    from fcm_tvm.benchmarks.layers import main

    with pytest.raises(SystemExit):
        main(["--profile-run", "--jobs", "4", "--out", str(tmp_path / "out")])
    assert "--profile-run runs in one process" in capsys.readouterr().err


def test_cases_run_in_processes_join_into_one_report(tmp_path, monkeypatch):
    import json

    from fcm_tvm.benchmarks import layers

    def run_cases(module, argv, cases, out, jobs):  # fp16's process fails before it reports
        for label in cases:
            if label.endswith("fp32"):
                context = {"gpu": "H100", "copy_bandwidth_gbs": 3000.0}
                report = {"context": context, "rows": [{"model": label}]}
                (out / label).mkdir(parents=True)
                (out / label / "layers.json").write_text(json.dumps(report))
        return {label: 0 if label.endswith("fp32") else 1 for label in cases}

    monkeypatch.setattr(layers, "run_cases", run_cases)
    argv = ["--models", "mobilenet_v2", "--batch", "1", "--precision", "fp32,fp16", "--jobs", "2"]
    assert layers.main([*argv, "--out", str(tmp_path)]) == 1
    saved = json.loads((tmp_path / "layers.json").read_text())
    assert saved["rows"] == [{"model": "mobilenet_v2_b1_fp32"}]
    assert saved["context"]["jobs"] == 2
    assert saved["context"]["copy_bandwidth_gbs"] == {"mobilenet_v2_b1_fp32": 3000.0}
