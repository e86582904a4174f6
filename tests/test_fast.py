"""The fast step (fast/step.py) against the NumPy reference step (engine.reference_step): the same losses,
metrics and every gradient, with dropout on and the same seed, with an explicit corruption, with padding,
in float64 (1e-10) and float32; the same refusals; the workspace reused across steps; its outputs, heads,
encoder and inference against the reference's; its gradient against finite differences. Then the
process-wide settings of fast/runtime.py, each in a fresh interpreter."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from _compare import assert_same_step

from electra_np.config import ElectraConfig, PretrainingConfig
from electra_np.engine import make_step
from electra_np.fast import runtime
from electra_np.masking import Corruption
from electra_np.model import Electra
from electra_np.params import WORD, generator_params, sub

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


def close(got, ref, tol=1e-12):
    assert got.shape == np.shape(ref)
    assert np.abs(got - ref).max() <= tol * max(1.0, float(np.abs(ref).max()))


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
    from electra_np.fast.encoder import Encoder
    from electra_np.fast.kernels import fused_attention
    if fused and not fused_attention.available(np.float64):
        pytest.skip("NumPy's BLAS is not scipy-openblas (or ELECTRA_NP_FUSED_ATTENTION=0)")
    if not fused:
        monkeypatch.setattr(fused_attention, "available", lambda dtype: False)
    setup = make_setup()
    compare(setup, perturbed(setup, np.float64), batch(), 1e-10)
    enc = Encoder(setup.disc, 3, 7, np.dtype(np.float64))
    assert enc.fused == fused and hasattr(enc, "att_scratch") == fused and hasattr(enc, "scores") != fused


def test_a_step_temperature_is_the_objective_temperature_of_that_step():
    """temperature= (a schedule's value) gives, on both paths, the step of an objective with that temperature,
    and at a high temperature other samples than at 1 (so the argument reaches the sampling)."""
    setup = make_setup(dropout=0.0)
    hot = Electra.build(setup.disc, dataclasses.replace(setup.objective, temperature=5.0))
    params, b = perturbed(setup, np.float64), batch()
    for backend in ("numpy", "fast"):
        _, m_arg, g_arg = make_step(setup, backend)(params, b, np.random.default_rng(4), temperature=5.0)
        _, m_hot, g_hot = make_step(hot, backend)(params, b, np.random.default_rng(4))
        _, m_one, _ = make_step(setup, backend)(params, b, np.random.default_rng(4))
        assert m_arg == m_hot and m_arg["disc_loss"] != m_one["disc_loss"]
        assert g_arg.keys() == g_hot.keys()
        for k in g_arg:
            np.testing.assert_array_equal(g_arg[k], g_hot[k])


def test_fast_equals_reference_with_explicit_corruption_and_eval_mode():
    setup = make_setup(act="gelu_new")
    b = batch()
    masked = np.zeros((3, 7), bool)
    masked[0, [1, 2, 5]] = masked[1, 1] = masked[2, 6] = True
    use = masked.copy()
    use[0, 5] = False
    corr = Corruption(masked, use, np.array([7, 9, 11, 5, 20]), np.argwhere(masked))
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
    from electra_np.engine import make_discriminator
    from electra_np.fast.inference import FastDiscriminator
    from electra_np.model import discriminator_forward
    setup = make_setup()
    w = sub(perturbed(setup, np.float64), "discriminator.")
    b = batch()
    ref, _ = discriminator_forward(w, setup.disc, b["input_ids"], b["token_type_ids"], b["attention_mask"])
    logits = make_discriminator(setup.disc, "fast")
    assert isinstance(logits, FastDiscriminator)
    close(logits(w, b), ref, 1e-10)


def test_inference_encoder_keeps_one_layer_of_buffers():
    """training=False: the layers share one set of buffers, there is no backward scratch, and backward
    is refused; its forward equals the training encoder's (dropout off)."""
    from electra_np.fast.encoder import Encoder, key_bias
    setup = make_setup(layers=3)
    w = sub(perturbed(setup, np.float64), "discriminator.")
    b = batch()
    B, T = b["input_ids"].shape
    bias = key_bias(b["attention_mask"], np.dtype(np.float64))
    outs = []
    for training in (True, False):
        enc = Encoder(setup.disc, B, T, np.dtype(np.float64), training=training)
        outs.append(enc.forward(w, b["input_ids"], b["token_type_ids"], bias, None).copy())
    assert np.array_equal(outs[0], outs[1])
    assert all(L is enc.layers[0] for L in enc.layers) and not hasattr(enc, "dqkv") and enc.grads == {}
    with pytest.raises(RuntimeError, match="inference"):
        enc.backward(np.zeros((B * T, setup.disc.hidden_size)))


@pytest.mark.parametrize("objective", ["electra", "mlm"])
def test_outputs_are_what_the_reference_cache_shows(objective):
    """outputs=True: fresh copies of the step's MLM logits, corruption with samples, discriminator logits and
    labels, equal to electra_forward's (float64, dropout on, the same seed), and untouched by the next step."""
    from electra_np.model import electra_forward
    setup = make_setup(objective)
    params, b = perturbed(setup, np.float64), batch()
    step = make_step(setup, "fast")
    _, _, _, out = step(params, b, np.random.default_rng(3), outputs=True)
    _, _, cache = electra_forward(params, setup, b, rng=np.random.default_rng(3))
    z, W, _ = cache["gen"][1][3]  # generator_head_forward's last linear: logits = z W^T + b
    close(out["mlm_logits"], z @ W.T + params["generator.generator_lm_head.bias"], 1e-10)
    got, ref = out["corruption"], cache["corruption"]
    assert np.array_equal(got.masked, ref.masked) and np.array_equal(got.use_mask_token, ref.use_mask_token)
    if objective == "electra":
        assert np.array_equal(got.samples, ref.samples) and np.array_equal(out["labels"], cache["labels"])
        close(out["disc_logits"], cache["disc_logits"], 1e-10)
    else:
        assert set(out) == {"mlm_logits", "corruption"} and got.samples is None
    kept = {k: v.copy() for k, v in out.items() if k != "corruption"}
    step(params, b, np.random.default_rng(4))
    assert all(np.array_equal(out[k], v) for k, v in kept.items())


def test_fast_heads_equal_the_ops_heads_and_losses():
    """fast/heads.py against ops/heads.py + ops/losses.py in float64: GeneratorHead's forward, loss_forward,
    loss_backward (softmax_cross_entropy_backward) and backward (generator_head_backward: dh zero but at the
    positions, the tied path's word gradient), with M growing past the first size; DiscriminatorHead's
    forward and backward (discriminator_head_backward)."""
    from electra_np.fast.heads import DiscriminatorHead, GeneratorHead
    from electra_np.ops import heads, losses
    setup = make_setup()
    params = perturbed(setup, np.float64)
    gw, dw, dt = generator_params(params), sub(params, "discriminator."), np.dtype(np.float64)
    B, T, Hg, H = 3, 7, setup.gen.hidden_size, setup.disc.hidden_size
    rng = np.random.default_rng(0)
    h, positions = rng.standard_normal((B * T, Hg)), np.array([1, 4, 5, 13, 20])
    labels = rng.integers(0, setup.gen.vocab_size, len(positions))
    head = GeneratorHead(setup.gen, B, T, 2, dt)
    ref_logits, head_cache = heads.generator_head_forward(h[positions], gw[WORD], gw, setup.gen.layer_norm_eps)
    close(head.forward(h, positions, gw), ref_logits)
    loss, argmax = head.loss_forward(labels)
    ref_loss, loss_cache = losses.softmax_cross_entropy_forward(ref_logits, labels)
    close(loss, ref_loss)
    assert np.array_equal(argmax, ref_logits.argmax(-1))
    head.loss_backward(0.7)
    dword = np.full_like(gw[WORD], np.nan)
    dh = head.backward(dword)
    ref_dhm, ref_dword, ref_grads = heads.generator_head_backward(
        losses.softmax_cross_entropy_backward(0.7, loss_cache), head_cache)
    close(dh[positions], ref_dhm)
    assert np.all(np.delete(dh, positions, axis=0) == 0)
    close(dword, ref_dword)
    for k, g in ref_grads.items():
        close(head.grads[k], g)
    disc = DiscriminatorHead(setup.disc, B, T, dt)
    hd, dlogits = rng.standard_normal((B * T, H)), rng.standard_normal((B, T))
    ref, disc_cache = heads.discriminator_head_forward(hd.reshape(B, T, H), dw, setup.disc.hidden_act)
    close(disc.forward(hd, dw), ref)
    ref_dh, ref_grads = heads.discriminator_head_backward(dlogits, disc_cache)
    close(disc.backward(dlogits, dw), ref_dh.reshape(B * T, H))
    for k, g in ref_grads.items():
        close(disc.grads[k], g)


@pytest.mark.parametrize("act,fused", [("gelu", True), ("gelu_new", False)])
def test_fast_step_kernels_against_finite_differences(monkeypatch, act, fused):
    """The whole fast step in float64, dropout on (the same seed every evaluation), fixed corruption, on both
    attention paths: its gradient comes from the kernels' _embeddings_ln_backward, _residual_layernorm_backward,
    _bias_gelu_backward, fused_attention's _backward or _softmax_dropout_backward, _softmax_xent_backward and
    _bce_backward."""
    from electra_np.fast.kernels import fused_attention
    from electra_np.gradcheck import check_function
    if not fused:
        monkeypatch.setattr(fused_attention, "available", lambda dtype: False)
    setup = make_setup(E=4, H=6, vocab=13, act=act)
    params, b = perturbed(setup, np.float64), batch(vocab=13)
    masked = np.zeros((3, 7), bool)
    masked[0, [1, 3]] = masked[1, 1] = masked[2, 5] = True
    use_mask = masked.copy()
    use_mask[0, 3] = False
    corruption = Corruption(masked, use_mask, np.array([9, b["input_ids"][0, 3], 11, 6]), np.argwhere(masked))
    step = make_step(setup, "fast")
    grads = {k: g.copy() for k, g in step(params, b, np.random.default_rng(9), corruption)[2].items()}
    errors = check_function(lambda: float(step(params, b, np.random.default_rng(9), corruption)[0]), params, grads,
                            max_entries=8)
    bad = {k: v for k, v in errors.items() if v >= 1e-6 and not k.endswith("attention.self.key.bias")}
    assert set(errors) == set(params) and not bad, bad


def test_generator_and_discriminator_activations_share_one_block():
    """Workspace: both encoders' activations live in one block, sized for the larger of the two (the
    generator's backward is over before the discriminator's forward), and stay correct when the
    discriminator's forward overwrites the generator's buffers on every step (compare runs 3 steps)."""
    from electra_np.fast.encoder import Arena

    setup = make_setup()
    params = perturbed(setup, np.float64)
    b = batch()
    step = make_step(setup, "fast")
    step(params, b, np.random.default_rng(0))
    ws = next(iter(step.workspaces.values()))
    assert 0 < ws.gen_bytes < ws.disc_bytes  # the generator is the smaller
    assert ws.block.nbytes == ws.disc_bytes + Arena.ALIGN < ws.gen_bytes + ws.disc_bytes
    assert np.shares_memory(ws.gen.layers[0].a, ws.block) and np.shares_memory(ws.disc.layers[0].a, ws.block)
    assert np.shares_memory(ws.gen_head.logits, ws.block) and np.shares_memory(ws.disc_head.a, ws.block)
    assert not np.shares_memory(ws.gen.grads["electra.encoder.layer.0.qkv.weight"], ws.block)
    # the forward-only scratch and the backward-only scratch overlap
    assert ws.disc.x_in.ctypes.data == ws.disc.hs_out[0].ctypes.data  # both start where the pair begins
    compare(setup, params, b, 1e-10, steps=3)


# ----------------------------------------------------------------------------- process-wide settings (runtime.py)

SETTINGS = ("OPENBLAS_THREAD_TIMEOUT", "NUMBA_THREADING_LAYER", "ELECTRA_NP_THREADS", "NUMBA_CPU_FEATURES",
            "NUMBA_CPU_NAME", "ELECTRA_NP_VECTOR_WIDTH") + runtime.THREAD_VARIABLES


def run_python(code, **env):
    """`code` in a fresh interpreter, with none of the SETTINGS variables but `env`. Returns its output words."""
    environ = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    out = subprocess.run([sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_importing_electra_np_changes_no_process_wide_setting():
    """Every module of the package imported, the fast path's included: the environment and Numba's
    configuration are as they were; only configure() changes them."""
    code = ("import os, sys, pkgutil, importlib, numba, electra_np; env = dict(os.environ); "
            "layer, features = numba.config.THREADING_LAYER, numba.config.CPU_FEATURES\n"
            "sys.modules.update(torch=None, transformers=None)  # PyTorch's modules are skipped: slow to import\n"
            "for m in pkgutil.walk_packages(electra_np.__path__, 'electra_np.'):\n"
            "    try:\n"
            "        m.name.endswith('__main__') or importlib.import_module(m.name)\n"
            "    except ImportError:\n"
            "        pass\n"
            "print(dict(os.environ) == env, numba.config.THREADING_LAYER == layer, "
            "numba.config.CPU_FEATURES == features, numba.config.THREADING_LAYER)")
    assert run_python(code) == ["True", "True", "True", "default"]


def test_thread_setting_governs_numba_and_blas_and_runs_are_repeatable(monkeypatch):
    import numba

    setup = make_setup()
    params = perturbed(setup, np.float32)
    b = batch()
    before = runtime.configure()
    try:
        assert runtime.configure(1) == 1 and numba.get_num_threads() == 1
        assert runtime.configure() == 1  # idempotent: a later call without a count keeps the one in force
        info = runtime.thread_info()
        assert info["configured"] and info["numba_threads"] == 1
        assert all(d["num_threads"] == 1 for d in info.get("blas", []))
        step = make_step(setup, "fast")  # configure() again: still 1
        runs = []
        for _ in range(2):  # grads are views of reused buffers: copy before the next step
            loss, _, grads = step(params, b, np.random.default_rng(0))
            runs.append((float(loss), {k: v.copy() for k, v in grads.items()}))
        assert runs[0][0] == runs[1][0] and numba.get_num_threads() == 1
        for k in runs[0][1]:  # same thread count, same seed: the same bits
            assert np.array_equal(runs[0][1][k], runs[1][1][k]), k
    finally:
        runtime.configure(before)
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.thread_count() == 3 and runtime.thread_count(2) == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(runtime.THREADS_ENV, bad)
        with pytest.raises(ValueError, match=f"ELECTRA_NP_THREADS must be a positive integer, got '{bad}'"):
            runtime.thread_count()
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        runtime.configure(0)


def test_thread_count_reaches_the_libraries_through_the_environment_before_numpy():
    """configure(n) before NumPy: the variables BLAS and Numba read when they load; ELECTRA_NP_THREADS as
    well; nothing when no count was asked for (the libraries' own default is the CPU count)."""
    show = "import os, sys; print([os.environ.get(v) for v in runtime.THREAD_VARIABLES], numba.get_num_threads())"
    code = "from electra_np.fast import runtime; runtime.configure({}); import numba; " + show
    assert run_python(code.format(1)) == ["['1',", "'1',", "'1',", "'1']", "1"]
    assert run_python(code.format(""), ELECTRA_NP_THREADS="1")[-1] == "1"
    assert run_python(code.format(""))[:4] == ["[None,", "None,", "None,", "None]"]


def test_kernels_use_the_workqueue_layer_unless_told_otherwise():
    """configure(): workqueue (OpenMP's spinning idle threads contend with OpenBLAS's, runtime.py), and an
    explicit NUMBA_THREADING_LAYER wins."""
    code = ("from electra_np.fast import runtime; runtime.configure(); import numpy as np, numba; "
            "from electra_np.fast.kernels.rows import sum_rows; sum_rows(np.ones((64, 8)), np.empty(8)); "
            "print(numba.threading_layer())")
    assert run_python(code) == ["workqueue"]
    assert run_python(code, NUMBA_THREADING_LAYER="omp") == ["omp"]


def test_kernels_compile_for_512_bit_vectors_on_avx512_hosts_unless_told_otherwise():
    """configure(): "-prefer-256-bit" appended to the host's features when it has AVX-512 (Numba's codegen
    then emits zmm code); ELECTRA_NP_VECTOR_WIDTH=256 or an explicit NUMBA_CPU_FEATURES / NUMBA_CPU_NAME
    keeps it off; a bad value is refused by name."""
    import llvmlite.binding as llvm

    avx512 = "+avx512f" in llvm.get_host_cpu_features().flatten().split(",")
    code = ("from electra_np.fast import runtime; runtime.configure(); import numba; "
            "f = numba.config.CPU_FEATURES; print(runtime.thread_info()['numba_512_bit_vectors'], "
            "bool(f) and f.endswith(',-prefer-256-bit'))")
    assert run_python(code) == [str(avx512)] * 2
    assert run_python(code, ELECTRA_NP_VECTOR_WIDTH="256") == ["False"] * 2
    assert run_python(code, NUMBA_CPU_NAME="generic")[0] == "False"
    with pytest.raises(AssertionError, match="ELECTRA_NP_VECTOR_WIDTH must be 256 or 512, got '128'"):
        run_python(code, ELECTRA_NP_VECTOR_WIDTH="128")


def test_openblas_idle_spin_is_shortened_when_configure_comes_first():
    """configure() before NumPy sets OPENBLAS_THREAD_TIMEOUT=12; an explicit value wins; after NumPy it
    sets nothing and says so."""
    show = "from electra_np.fast import runtime; runtime.configure(); i = runtime.thread_info(); " \
           "print(i['openblas_thread_timeout'], i['blas_spin_set_before_numpy'])"
    assert run_python(show) == ["12", "True"]
    assert run_python(show, OPENBLAS_THREAD_TIMEOUT="20") == ["20", "True"]
    assert run_python("import numpy, warnings; warnings.simplefilter('ignore'); " + show) == \
        ["None", "False"]


def test_fast_path_warns_once_when_numpy_came_first_with_the_long_blas_spin():
    """Building the fast path after NumPy (configure() not called first, OPENBLAS_THREAD_TIMEOUT unset) warns
    once, naming the fix; configure() first, or the variable set, gives no warning. Importing electra_np is
    no longer a way around it: it changes nothing."""
    code = ("import warnings; {first}; from electra_np.config import preset; "
            "from electra_np.fast.inference import FastDiscriminator; from electra_np.fast import runtime\n"
            "with warnings.catch_warnings(record=True) as got:\n"
            "    warnings.simplefilter('always'); FastDiscriminator(preset('tiny')); runtime.configure(); "
            "FastDiscriminator(preset('tiny'))\n"
            "print(len(got), got[0].message if got else '')")
    for first in ("import numpy", "import electra_np, numpy"):
        count, *message = run_python(code.format(first=first))
        message = " ".join(message)
        assert count == "1" and "NumPy was imported before electra_np.fast.runtime.configure() ran" in message
        assert "call configure() before importing NumPy, or set OPENBLAS_THREAD_TIMEOUT=12" in message
    assert run_python(code.format(first="from electra_np.fast import runtime; runtime.configure(); import numpy")) \
        == ["0"]
    assert run_python(code.format(first="import numpy"), OPENBLAS_THREAD_TIMEOUT="12") == ["0"]


def test_the_tests_run_with_the_settings_of_configure():
    """conftest.py calls configure() before anything imports NumPy."""
    info = runtime.thread_info()
    assert info["configured"] and info["blas_spin_set_before_numpy"]
