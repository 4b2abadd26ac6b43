"""The TVM plugin, driven from a fresh interpreter that imports only ``tvm``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run_fresh(code: str, **environment: str) -> subprocess.CompletedProcess:
    """Run ``code`` as a script file (TVMScript reads its own source) in a fresh interpreter."""
    import os
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as script:
        script.write(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, script.name],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=600,
    )


def test_import_tvm_registers_the_fcm_pipeline_without_importing_fcm_tvm_itself():
    result = run_fresh("""
        import sys, tvm
        from tvm.relax.pipeline import PIPELINE_MAP
        assert "fcm" in PIPELINE_MAP, sorted(PIPELINE_MAP)
        heavy = [m for m in ("fcm_tvm.compiler", "fcm_tvm.relay_passes", "onnx") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
    assert "Failed to autoload" not in result.stderr


def test_tvm_compile_with_the_fcm_pipeline_fuses_a_relax_module():
    result = run_fresh("""
        import numpy as np, tvm
        from tvm.script import relax as R

        @tvm.script.ir_module
        class Separable:
            @R.function
            def main(x: R.Tensor((1, 8, 12, 12), "float32"), w_dw: R.Tensor((8, 1, 3, 3), "float32"),
                     w_pw: R.Tensor((16, 8, 1, 1), "float32")):
                with R.dataflow():
                    dw = R.nn.conv2d(x, w_dw, padding=[1, 1, 1, 1], groups=8)
                    act = R.nn.relu(dw)
                    out = R.nn.conv2d(act, w_pw)
                    R.output(out)
                return out

        rng = np.random.default_rng()
        w_dw = rng.standard_normal((8, 1, 3, 3)).astype("float32")
        w_pw = rng.standard_normal((16, 8, 1, 1)).astype("float32")
        module = tvm.relax.transform.BindParams("main", {"w_dw": w_dw, "w_pw": w_pw})(Separable)
        fused = tvm.compile(module, tvm.target.Target("llvm"), relax_pipeline="fcm")
        stock = tvm.compile(module, tvm.target.Target("llvm"))
        x = rng.standard_normal((1, 8, 12, 12)).astype("float32")
        run = lambda ex: tvm.relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_allclose(run(fused), run(stock), rtol=1e-4, atol=1e-4)
        import fcm_tvm.transform as T
        rewritten = T.FuseDepthwisePointwise(tvm.target.Target("llvm"))(module)
        assert any(gv.name_hint.startswith("fcm") for gv in rewritten.functions), rewritten
        print("ok")
    """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_import_tvm_survives_when_the_plugin_cannot_load():
    result = run_fresh("import tvm; print('ok')", TVM_DEVICE_BACKEND_AUTOLOAD="0")
    assert result.returncode == 0 and "ok" in result.stdout


@pytest.mark.parametrize("runtime_only", ["1"])
def test_a_runtime_only_tvm_imports_with_the_plugin_installed(runtime_only):
    result = run_fresh("import tvm, fcm_tvm; print('ok')", TVM_USE_RUNTIME_LIB=runtime_only)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
