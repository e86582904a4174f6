"""The fast step (fast.py) against the NumPy reference step (engine.reference_step): the same losses,
metrics and every gradient, with dropout on and the same seed, with an explicit corruption, with padding,
in float64 (1e-10) and float32; the same refusals; the workspace reused across steps."""

import numpy as np
import pytest

from _compare import assert_same_step
from electra_np.config import ElectraConfig, PretrainingConfig
from electra_np.engine import make_step
from electra_np.masking import Corruption
from electra_np.model import Electra

CLS, SEP, MASK, PAD = 2, 3, 4, 0


def make_setup(objective="electra", dropout=0.1, E=8, H=12, heads=3, vocab=29, layers=2, act="gelu"):
    cfg = ElectraConfig(vocab_size=vocab, embedding_size=E, hidden_size=H, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=20, max_position_embeddings=16,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, hidden_act=act)
    return Electra.build(cfg, PretrainingConfig(generator_hidden_size=0.5, objective=objective))


def perturbed(setup, dtype, seed=0):
    params = setup.init_params(seed, dtype)
    rng = np.random.default_rng(seed + 1)
    for k, p in params.items():
        if "LayerNorm" in k or k.endswith("bias"):
            p += rng.normal(0, 0.2, p.shape).astype(dtype)
        else:
            p *= 20
    return params


def batch(B=3, T=7, vocab=29, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (B, T))
    ids[:, 0] = CLS
    mask = np.ones((B, T), np.int64)
    mask[1, 4:] = 0  # padding
    ids[1, 3], ids[1, 4:] = SEP, PAD
    ids[0, 2] = ids[0, 1]  # a repeated id
    types = np.zeros((B, T), np.int64)
    types[0, 4:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def compare(setup, params, b, tol, seed=3, corruption=None, train=True, steps=1):
    ref_step, fast_step = make_step(setup, "numpy"), make_step(setup, "fast")
    r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
    for _ in range(steps):
        ref = ref_step(params, b, r1, corruption=corruption, train=train)
        lf, mf, gf = fast_step(params, b, r2, corruption=corruption, train=train)
        assert_same_step((lf, mf, gf), ref, tol, grad_floor=1e-3)
    assert r1.random() == r2.random()  # both consumed the same draws
    return gf


@pytest.mark.parametrize("objective", ["electra", "mlm"])
def test_fast_equals_reference_float64_dropout_on(objective):
    setup = make_setup(objective)
    compare(setup, perturbed(setup, np.float64), batch(), 1e-10)


def test_fast_equals_reference_float32_dropout_on():
    setup = make_setup()
    compare(setup, perturbed(setup, np.float32), batch(), 2e-3)


@pytest.mark.parametrize("fused", [True, False])
def test_both_attention_paths_equal_the_reference(monkeypatch, fused):
    """The per-pair attention kernel where NumPy's BLAS allows it, else the batched products around the
    softmax kernels: each gives the reference's step (float64, dropout on)."""
    from electra_np.fast import step as fast
    from electra_np.fast.kernels import fused_attention
    if fused and not fused_attention.available(np.float64):
        pytest.skip("NumPy's BLAS is not scipy-openblas (or ELECTRA_NP_FUSED_ATTENTION=0)")
    if not fused:
        monkeypatch.setattr(fused_attention, "available", lambda dtype: False)
    setup = make_setup()
    compare(setup, perturbed(setup, np.float64), batch(), 1e-10)
    enc = fast._Encoder(setup.disc, 3, 7, np.dtype(np.float64))
    assert enc.fused == fused and hasattr(enc, "att_scratch") == fused and hasattr(enc, "scores") != fused


def test_fast_equals_reference_with_explicit_corruption_and_eval_mode():
    setup = make_setup(act="gelu_new")
    b = batch()
    masked = np.zeros((3, 7), bool)
    masked[0, [1, 2, 5]] = masked[1, 1] = masked[2, 6] = True
    use = masked.copy()
    use[0, 5] = False
    corr = Corruption(masked, use, np.array([7, 9, 11, 5, 20]))
    compare(setup, perturbed(setup, np.float64), b, 1e-10, corruption=corr, train=False)
    compare(setup, perturbed(setup, np.float64), b, 1e-10, corruption=Corruption(masked, use), train=True)


def test_fast_equals_reference_with_one_token_and_no_projection():
    setup = make_setup(E=12, H=12, heads=3)  # E == H: no embeddings_project
    b = {"input_ids": np.array([[7], [9]])}  # T = 1
    masked = np.ones((2, 1), bool)
    compare(setup, perturbed(setup, np.float64), b, 1e-10, corruption=Corruption(masked, masked))


def test_workspace_is_reused_and_steps_stay_equal():
    setup = make_setup()
    params = perturbed(setup, np.float64)
    b = batch()
    compare(setup, params, b, 1e-10, steps=3)
    step = make_step(setup, "fast")
    rng = np.random.default_rng(0)
    _, _, g1 = step(params, b, rng)
    ids1 = {k: id(v.base if v.base is not None else v) for k, v in g1.items()}
    _, _, g2 = step(params, b, rng)
    assert {k: id(v.base if v.base is not None else v) for k, v in g2.items()} == ids1  # same buffers
    assert len(step.workspaces) == 1


def test_fast_refuses_what_the_reference_refuses():
    setup = make_setup()
    params = perturbed(setup, np.float32)
    ref, fast = make_step(setup, "numpy"), make_step(setup, "fast")
    rng = np.random.default_rng(0)
    bad = [({"input_ids": np.array([[2, 99, 3]])}, None),
           ({"input_ids": np.array([[2.0, 5.0, 3.0]])}, None),
           ({"input_ids": np.array([[2, 5, 3]]), "attention_mask": np.array([[1, 2, 1]])}, None),
           (batch(), Corruption(np.ones((3, 7), bool), np.zeros((3, 7), bool)))]
    for b, corr in bad:
        with pytest.raises(ValueError) as e_ref:
            ref(params, b, rng, corruption=corr)
        with pytest.raises(ValueError) as e_fast:
            fast(params, b, rng, corruption=corr)
        assert str(e_fast.value) == str(e_ref.value)
    broken = dict(params)
    broken.pop(next(iter(broken)))
    with pytest.raises(ValueError, match="missing keys"):
        fast(broken, batch(), rng)


def test_fast_discriminator_inference_equals_reference():
    from electra_np.fast.step import make_fast_discriminator
    from electra_np.model import discriminator_forward
    from electra_np.params import sub
    setup = make_setup()
    params = perturbed(setup, np.float64)
    w = sub(params, "discriminator.")
    b = batch()
    ref, _ = discriminator_forward(w, setup.disc, b["input_ids"], b["token_type_ids"], b["attention_mask"])
    got = make_fast_discriminator(setup.disc)(w, b)
    assert np.abs(got - ref).max() <= 1e-10 * np.abs(ref).max()


def test_inference_encoder_keeps_one_layer_of_buffers():
    """training=False: the layers share one set of buffers, there is no backward scratch, and backward
    is refused; its forward equals the training encoder's (dropout off)."""
    from electra_np.fast.step import _Encoder, key_bias
    from electra_np.params import sub
    setup = make_setup(layers=3)
    w = sub(perturbed(setup, np.float64), "discriminator.")
    b = batch()
    B, T = b["input_ids"].shape
    bias = key_bias(b["attention_mask"], np.dtype(np.float64))
    outs = []
    for training in (True, False):
        enc = _Encoder(setup.disc, B, T, np.dtype(np.float64), training=training)
        outs.append(enc.forward(w, b["input_ids"], b["token_type_ids"], bias, None).copy())
    assert np.array_equal(outs[0], outs[1])
    assert all(L is enc.layers[0] for L in enc.layers) and not hasattr(enc, "dqkv") and enc.grads == {}
    with pytest.raises(RuntimeError, match="inference"):
        enc.backward(np.zeros((B * T, setup.disc.hidden_size)))


def test_thread_setting_governs_numba_and_blas_and_runs_are_repeatable(monkeypatch):
    import numba

    from electra_np.fast import runtime as threads
    setup = make_setup()
    params = perturbed(setup, np.float32)
    b = batch()
    before = numba.get_num_threads()
    try:
        assert threads.set_num_threads(1) == 1 and numba.get_num_threads() == 1
        info = threads.thread_info()
        assert info["numba_threads"] == 1
        assert all(d["num_threads"] == 1 for d in info.get("blas", []))
        step = make_step(setup, "fast")
        runs = []
        for _ in range(2):  # grads are views of reused buffers: copy before the next step
            loss, _, grads = step(params, b, np.random.default_rng(0))
            runs.append((float(loss), {k: v.copy() for k, v in grads.items()}))
        assert runs[0][0] == runs[1][0]
        for k in runs[0][1]:  # same thread count, same seed: the same bits
            assert np.array_equal(runs[0][1][k], runs[1][1][k]), k
    finally:
        threads.set_num_threads(before)
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.default_threads() == 3
    monkeypatch.setenv(threads.ENV, "0")
    with pytest.raises(ValueError, match="ELECTRA_NP_THREADS"):
        threads.default_threads()


def test_kernels_use_the_workqueue_layer_unless_told_otherwise():
    """OpenMP's spinning idle threads contend with OpenBLAS's (kernels/__init__.py): workqueue by default,
    and an explicit NUMBA_THREADING_LAYER wins."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np, numba; from electra_np.fast.kernels.common import sum_rows; "
            "sum_rows(np.ones((64, 8)), np.empty(8)); print(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "workqueue"
    env["NUMBA_THREADING_LAYER"] = "omp"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == "omp"


def test_kernels_compile_for_512_bit_vectors_on_avx512_hosts_unless_told_otherwise():
    """kernels/__init__.py: "-prefer-256-bit" appended to the host's features when it has AVX-512 (Numba's
    codegen then emits zmm code); ELECTRA_NP_VECTOR_WIDTH=256 or an explicit NUMBA_CPU_FEATURES keeps it
    off; a bad value is refused by name."""
    import os
    import subprocess
    import sys

    import llvmlite.binding as llvm

    avx512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    code = ("import numba, electra_np.fast.kernels as k; from electra_np.fast.runtime import thread_info; "
            "f = numba.config.CPU_FEATURES; print(k.PREFER_512_BIT, thread_info()['numba_512_bit_vectors'], "
            "bool(f) and f.endswith(',-prefer-256-bit'))")

    def run(**extra):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NUMBA_CPU_FEATURES", "NUMBA_CPU_NAME", "ELECTRA_NP_VECTOR_WIDTH")}
        env.update(extra)
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    assert run().stdout.split() == [str(avx512)] * 3
    assert run(ELECTRA_NP_VECTOR_WIDTH="256").stdout.split() == ["False"] * 3
    assert run(NUMBA_CPU_NAME="generic").stdout.split()[:2] == ["False"] * 2
    bad = run(ELECTRA_NP_VECTOR_WIDTH="128")
    assert bad.returncode != 0 and "ELECTRA_NP_VECTOR_WIDTH must be 256 or 512, got '128'" in bad.stderr


def test_openblas_idle_spin_is_shortened_when_electra_np_comes_first():
    """threads.quiet_blas_spin: OPENBLAS_THREAD_TIMEOUT=12 set on import, before NumPy loads OpenBLAS;
    an explicit value wins; after NumPy it sets nothing and says so."""
    import os
    import subprocess
    import sys

    def run(code, **extra):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return out.stdout.split()

    show = "import os; from electra_np.fast.runtime import thread_info; i = thread_info(); " \
           "print(i['openblas_thread_timeout'], i['set_before_numpy'])"
    assert run("import electra_np; " + show) == ["12", "True"]
    assert run("import electra_np; " + show, OPENBLAS_THREAD_TIMEOUT="20") == ["20", "True"]
    assert run("import numpy, electra_np; " + show) == ["None", "False"]


def test_fast_path_warns_when_numpy_came_first_with_the_long_blas_spin():
    """threads.warn_if_blas_spins: building a fast step after NumPy (OPENBLAS_THREAD_TIMEOUT unset) warns
    once, naming the fix; electra_np first, or the variable set, gives no warning."""
    import os
    import subprocess
    import sys

    code = ("import warnings; {first}; from electra_np.config import preset; "
            "from electra_np.fast.step import make_fast_discriminator\n"
            "with warnings.catch_warnings(record=True) as got:\n"
            "    warnings.simplefilter('always'); make_fast_discriminator(preset('tiny')); "
            "make_fast_discriminator(preset('tiny'))\n"
            "print(len(got)); print(got[0].message if got else '')")

    def run(first, **extra):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", code.format(first=first)], env=env, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.splitlines()

    count, message = run("import numpy, electra_np")
    assert count == "1" and "NumPy was imported before electra_np" in message
    assert "OPENBLAS_THREAD_TIMEOUT=12" in message
    assert run("import electra_np, numpy")[0] == "0"
    assert run("import numpy, electra_np", OPENBLAS_THREAD_TIMEOUT="12")[0] == "0"


def test_generator_and_discriminator_activations_share_one_block():
    """fast.Workspace: both encoders' activations live in one block, sized for the larger of the two
    (the generator's backward is over before the discriminator's forward), and stay correct when the
    discriminator's forward overwrites the generator's buffers on every step (compare runs 3 steps)."""
    from electra_np.fast.step import Arena

    setup = make_setup()
    params = perturbed(setup, np.float64)
    b = batch()
    step = make_step(setup, "fast")
    step(params, b, np.random.default_rng(0))
    ws = next(iter(step.workspaces.values()))
    assert 0 < ws.gen_bytes < ws.disc_bytes  # the generator is the smaller
    assert ws.block.nbytes == ws.disc_bytes + Arena.ALIGN < ws.gen_bytes + ws.disc_bytes
    assert np.shares_memory(ws.gen.layers[0].a, ws.block) and np.shares_memory(ws.disc.layers[0].a, ws.block)
    assert np.shares_memory(ws.logits, ws.block)
    assert not np.shares_memory(ws.gen.grads["electra.encoder.layer.0.qkv.weight"], ws.block)
    # the forward-only scratch and the backward-only scratch overlap
    assert ws.disc.x_in.ctypes.data == ws.disc.hs_out[0].ctypes.data  # both start where the pair begins
    compare(setup, params, b, 1e-10, steps=3)
