"""The diagnostics of a pretraining run (train/diagnostics.py, model.disc_metrics): replaced-token detection
against hand-worked cases, the unigram entropy against a hand-computed distribution, the collapse statistics on
constructed hidden states, the held-out numbers against a recomputation, and the warnings of a run through
`electra-np pretrain`."""

import json
import math
from itertools import product

import numpy as np
import pytest
from test_train import env, metrics, pretrain  # noqa: F401  (env: the module fixture)

from electra_np.config import ElectraConfig, PretrainingConfig
from electra_np.model import Electra, disc_metrics, electra_forward
from electra_np.train import diagnostics, run_dir
from electra_np.train.config import TrainConfig
from electra_np.train.held_out import held_out_metrics
from electra_np.train.metrics import roc_auc

PAD, CLS, SEP = 0, 2, 3


# ----------------------------------------------------------------------------- detection

def test_disc_metrics_by_hand():
    # real tokens 0..6 (7 is padding, flagged and "replaced" there to show it is left out); a logit of exactly 0
    # answers "original"
    logits = np.array([[-1.0, 2.0, 0.0, 3.0, -2.0, 1.0, -1.0, 5.0]], np.float32)
    labels = np.array([[0, 1, 1, 0, 0, 1, 0, 1]])
    mask = np.array([[1, 1, 1, 1, 1, 1, 1, 0]])
    m = disc_metrics(1.5, 0.25, logits, labels, mask)
    # TP = {1, 5}, FP = {3}, FN = {2}, TN = {0, 4, 6}
    assert m["disc_precision"] == pytest.approx(2 / 3) and m["disc_recall"] == pytest.approx(2 / 3)
    assert m["disc_balanced_acc"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert m["disc_acc"] == pytest.approx(5 / 7) and m["replaced_frac"] == pytest.approx(3 / 7)
    assert m["disc_baseline_acc"] == pytest.approx(4 / 7) and m["loss"] == 1.5 and m["disc_loss"] == 0.25


def test_disc_metrics_degenerate_cases():
    mask = np.ones((2, 3), np.int64)
    labels = np.array([[0, 1, 0], [0, 0, 1]])
    always_original = disc_metrics(0, 0, np.full((2, 3), -1.0), labels, mask)
    assert always_original["disc_precision"] == 0.0 and always_original["disc_recall"] == 0.0
    assert always_original["disc_balanced_acc"] == 0.5 and always_original["disc_acc"] == pytest.approx(4 / 6)
    always_replaced = disc_metrics(0, 0, np.full((2, 3), 1.0), labels, mask)
    assert always_replaced["disc_precision"] == pytest.approx(2 / 6) and always_replaced["disc_recall"] == 1.0
    assert always_replaced["disc_balanced_acc"] == 0.5
    nothing_replaced = disc_metrics(0, 0, np.array([[1.0, -1, -1], [-1, -1, -1]]), np.zeros((2, 3)), mask)
    assert nothing_replaced["disc_recall"] == 0.0 and nothing_replaced["disc_precision"] == 0.0
    assert nothing_replaced["disc_balanced_acc"] == pytest.approx(5 / 6)  # the one class present: its recall


def test_roc_auc_by_hand_with_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)  # scikit-learn's example
    # positives {0.5, 0.9} vs negatives {0.5, 0.2}: a tie (1/2) and three wins, of 4 pairs
    assert roc_auc([1, 0, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(3.5 / 4)
    assert roc_auc([1, 0, 1, 0], [7, 7, 7, 7]) == 0.5
    assert roc_auc([1, 1, 0], [0.0, 0.1, 0.2]) == 0.0
    assert roc_auc([0, 0], [0.1, 0.2]) is None and roc_auc([1], [0.3]) is None


def test_roc_auc_against_all_pairs():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.3
    s = rng.integers(0, 12, 300).astype(np.float32)  # many ties
    pos, neg = s[y], s[~y]
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in product(pos, neg)]
    assert roc_auc(y, s) == pytest.approx(np.mean(pairs), abs=1e-12)


# ----------------------------------------------------------------------------- unigram entropy

class Rows:
    """A stand-in for data.PretrainingData: rows of ids, attention mask up to the last non-[PAD]."""

    def __init__(self, rows):
        self.ids = np.array(rows, np.int64)

    def __len__(self):
        return len(self.ids)

    def batch(self, indices):
        ids = self.ids[np.asarray(indices, np.int64)]
        T = ids.shape[1]
        length = T - np.argmax((ids != PAD)[:, ::-1], axis=1)
        return {"input_ids": ids, "token_type_ids": np.zeros_like(ids),
                "attention_mask": (np.arange(T)[None] < length[:, None]).astype(np.int64)}


def test_unigram_entropy_by_hand():
    data = Rows([[CLS, 5, 5, 6, SEP, PAD],
                 [CLS, 7, 5, SEP, 6, SEP],
                 [CLS, 1, 1, 1, 1, SEP]])  # [UNK] (1) is a token like any other
    # tokens 5: 3, 6: 2, 7: 1, 1: 4 of 10
    p = np.array([3, 2, 1, 4]) / 10
    assert diagnostics.unigram_entropy(data, (CLS, SEP, PAD)) == pytest.approx(-(p * np.log(p)).sum())
    # two of three rows, evenly spaced: rows 0 and 2 -> 5: 2, 6: 1, 1: 4 of 7
    p = np.array([2, 1, 4]) / 7
    assert diagnostics.unigram_entropy(data, (CLS, SEP, PAD), max_rows=2) == pytest.approx(-(p * np.log(p)).sum())
    assert diagnostics.unigram_entropy(Rows([[CLS, 9, 9, SEP]]), (CLS, SEP, PAD)) == 0.0  # one token: certain


# ----------------------------------------------------------------------------- collapse

def test_collapse_statistics_on_constructed_states():
    mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    same = np.tile(np.array([0.3, -1.0, 2.0]), (2, 4, 1))  # (B, T, H): one vector everywhere
    same[0, 3] = 100.0  # padding: ignored
    assert np.allclose(diagnostics.token_spread(same, mask), 0.0)
    cls, mean = diagnostics.sentence_vectors(same, mask)
    assert np.allclose(mean, same[:, 0]) and diagnostics.mean_pairwise_cosine(cls) == pytest.approx(1.0)

    two = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # mean (0.5, 0.5): spread^2 = 0.5 / 1
    assert diagnostics.token_spread(two, np.ones((1, 2))) == pytest.approx([math.sqrt(0.5)])
    assert diagnostics.token_spread(two, np.array([[1, 0]])).size == 0  # one real position: left out
    # cosines of (1, 0), (0, 1), (1, 1): 0, 1/sqrt(2), 1/sqrt(2)
    assert diagnostics.mean_pairwise_cosine([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]) == pytest.approx(math.sqrt(2) / 3)
    assert diagnostics.mean_pairwise_cosine([[1.0, 0.0]]) is None

    rng = np.random.default_rng(0)
    h = rng.standard_normal((64, 32, 128))
    spread = diagnostics.token_spread(h, np.ones((64, 32)))
    assert np.allclose(spread, math.sqrt(1 - 1 / 32), atol=0.02)  # unrelated vectors: 1 - 1/n of the power
    cls, mean = diagnostics.sentence_vectors(h, np.ones((64, 32)))
    assert abs(diagnostics.mean_pairwise_cosine(cls)) < 0.02 and abs(diagnostics.mean_pairwise_cosine(mean)) < 0.02


def test_held_out_diagnostics_match_a_recomputation():
    config = ElectraConfig(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=16)
    setup = Electra.build(config, PretrainingConfig(mask_prob=0.3, generator_hidden_size=0.5))
    params = setup.init_params(0)
    rng = np.random.default_rng(5)
    rows = [[CLS, *rng.integers(5, 40, n), SEP] + [PAD] * (10 - n) for n in rng.integers(3, 11, 7)]
    data = Rows(rows)
    ev = held_out_metrics(params, setup, data, batch_size=3, max_examples=7, seed=11)

    eval_rng = np.random.default_rng(11)  # the same batches, masks and samples, pooled by hand
    logits, labels, masks, hidden = [], [], [], []
    for start in range(0, 7, 3):
        batch = data.batch(np.arange(start, min(start + 3, 7)))
        _, _, cache = electra_forward(params, setup, batch, rng=eval_rng, train=False)
        logits += list(cache["disc_logits"])
        labels += list(cache["labels"])
        masks += list(batch["attention_mask"])
        hidden += list(cache["disc"][0]["hidden_states"][-1])
    real = np.array(masks) != 0
    y, s = np.array(labels)[real], np.array(logits)[real]
    flagged = s > 0
    tp = np.sum(flagged & (y == 1))
    assert 0 < y.sum() < y.size
    assert ev["disc_precision"] == pytest.approx(tp / flagged.sum() if flagged.sum() else 0.0)
    assert ev["disc_recall"] == pytest.approx(tp / y.sum())
    assert ev["disc_balanced_acc"] == pytest.approx((tp / y.sum() + np.sum(~flagged & (y == 0)) / np.sum(y == 0)) / 2)
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in product(s[y == 1], s[y == 0])]
    assert ev["disc_auc"] == pytest.approx(np.mean(pairs))
    spreads = []
    for h, m in zip(hidden, masks):
        x = h[m != 0].astype(np.float64)
        spreads.append(np.sqrt(((x - x.mean(0)) ** 2).sum() / (x ** 2).sum()))
    assert ev["token_spread"] == pytest.approx(np.mean(spreads))
    u = np.array([h[0] / np.linalg.norm(h[0]) for h in hidden], np.float64)
    assert ev["cls_cosine"] == pytest.approx(np.mean([u[i] @ u[j] for i in range(7) for j in range(7) if i != j]))
    assert -1 <= ev["mean_cosine"] <= 1 and ev["examples"] == 7


# ----------------------------------------------------------------------------- warnings

def evaluation(**kw):
    ev = {"disc_acc": 0.86, "disc_baseline_acc": 0.75, "disc_auc": 0.8, "disc_recall": 0.4, "token_spread": 0.6,
          "mean_cosine": 0.97, "cls_cosine": 0.999}  # a healthy tiny run's numbers
    return {**ev, **kw}


def test_warning_conditions():
    tc = TrainConfig(steps=100, lr=1e-3)  # warmup 10
    objective = PretrainingConfig()
    assert diagnostics.warnings_for(evaluation(), 50, tc, objective) == []
    at_base = evaluation(disc_acc=0.755)
    assert diagnostics.warnings_for(at_base, 10, tc, objective) == []  # still warming up
    [(name, line)] = diagnostics.warnings_for(at_base, 11, tc, objective)
    assert name == "baseline" and "step 11" in line and "0.755 vs 0.750" in line and "ROC AUC 0.800" in line
    for option in ("--mask_prob (now 0.15, e.g. 0.25)", "--temperature (now 1, e.g. 3)",
                   "--generator_hidden_size (now 0.25, e.g. 0.125)", "--lr (now 0.001, e.g. 0.0005)",
                   "--warmup (now 10, e.g. 20)"):
        assert option in line, option
    assert [n for n, _ in diagnostics.warnings_for(evaluation(disc_auc=0.53), 50, tc, objective)] == ["baseline"]
    collapsed = diagnostics.warnings_for(evaluation(mean_cosine=0.999), 5, tc, objective)
    assert [n for n, _ in collapsed] == ["collapse"] and "vectors of different examples 0.999" in collapsed[0][1]
    assert "--lr (now 0.001, e.g. 0.0005) or a longer --warmup (now 10, e.g. 20)" in collapsed[0][1]
    assert [n for n, _ in diagnostics.warnings_for(evaluation(token_spread=0.01), 5, tc, objective)] == ["collapse"]
    mlm = {"token_spread": 0.6, "mean_cosine": 0.3}  # the MLM objective: no discriminator to judge
    assert diagnostics.warnings_for(mlm, 50, tc, objective) == []


def test_a_run_at_its_baseline_says_so(env, tmp_path, capsys):  # noqa: F811
    """lr 1e-7: the discriminator stays at its random start, below the always-original baseline."""
    out = tmp_path / "stuck"
    capsys.readouterr()
    assert pretrain(env, out, "--steps", "6", "--eval_every", "2", "--warmup", "1", "--lr", "1e-7",
                    "--mask_prob", "0.15", "--temperature", "1") == 0
    printed = capsys.readouterr().out
    log = (out / run_dir.LOG_NAME).read_text()
    # the condition holds at steps 2, 4 and 6: reported once it holds at two evaluations in a row
    # the log line once, and again in the closing summary (log.txt holds the whole console output)
    assert log.count("sits at its baseline") == 2 and "warning: step 4, past the 1 warm-up steps" in log
    assert "--mask_prob (now 0.15, e.g. 0.25)" in log and "--temperature (now 1, e.g. 3)" in log
    assert printed.count("sits at its baseline") == 2  # the log line, and again in the closing summary
    evals = metrics(out, "eval")
    assert [e["warnings"] for e in evals] == [["baseline"]] * 3
    for e in evals:
        assert e["disc_acc"] < e["disc_baseline_acc"] and abs(e["disc_auc"] - 0.5) < 0.1
        for key in ("disc_precision", "disc_recall", "disc_balanced_acc", "token_spread", "cls_cosine",
                    "mean_cosine", "unigram_entropy", "replaced_frac", "mlm_acc"):
            assert isinstance(e[key], float), key
    assert evals[0]["unigram_entropy"] == evals[-1]["unigram_entropy"] > evals[-1]["mlm_loss"] / 3
    eval_lines = [line for line in log.splitlines() if line.startswith("eval ")]
    assert len(eval_lines) == 3 and all(" auc 0." in line and " spread " in line and "(unigram entropy " in line
                                        for line in eval_lines)
    assert "replaced-token detection: ROC AUC" in printed and "unigram entropy of the training tokens" in printed
    train = metrics(out)
    assert {"disc_precision", "disc_recall", "disc_balanced_acc"} <= set(train[-1])
    record = json.loads((out / run_dir.RUN_NAME).read_text())["training"]
    assert record["budget_minutes"] is None and record["snapshots"] == []


def test_a_collapsing_run_says_so(env, tmp_path, capsys):  # noqa: F811
    """lr 3e-2 without warmup: every position of every held-out text gets the same vector within 5 steps."""
    out = tmp_path / "collapsed"
    capsys.readouterr()
    assert pretrain(env, out, "--steps", "10", "--eval_every", "5", "--warmup", "0", "--lr", "3e-2",
                    "--mask_prob", "0.15", "--temperature", "1") == 0
    log = (out / run_dir.LOG_NAME).read_text()
    evals = metrics(out, "eval")
    assert all(e["token_spread"] < 0.01 and e["mean_cosine"] > 0.999 for e in evals)
    assert [e["warnings"] for e in evals] == [["baseline", "collapse"]] * 2
    assert log.count("look collapsed") == 2 and "warning: step 10, the encoder's representations" in log
    assert "try a lower --lr (now 0.03, e.g. 0.015) or a longer --warmup (now 0, e.g. 10)" in log
    assert capsys.readouterr().out.count("look collapsed") == 2  # the log line, and again in the closing summary
