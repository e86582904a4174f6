"""`electra-np plot`: the PNG of a pretraining run (ELECTRA and MLM-only) and of a fine-tuned classifier, and
the one-line errors (no matplotlib, nothing to plot)."""

import json
import math
import sys

import pytest

from electra_np.cli.main import main
from electra_np.train.plot import PLOT_EXTRA, plot_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 10_000  # a blank or one-panel figure is smaller; several drawn panels are well above

ELECTRA_PANELS = ["total loss", "MLM loss", "discriminator loss", "MLM accuracy", "discriminator accuracy",
                  "replaced-token detection", "replaced share", "learning rate", "tokens/s", "gradient norm",
                  "sentence-vector cosine", "token spread"]
MLM_PANELS = ["total loss", "MLM loss", "MLM accuracy", "learning rate", "tokens/s", "gradient norm",
              "sentence-vector cosine", "token spread"]


def write_pretrain_run(folder, electra=True, steps=40, eval_every=10):
    """metrics.jsonl as train/loop.py writes it: train records every 2 steps, eval records every eval_every."""
    folder.mkdir()
    lines = []
    for step in range(2, steps + 1, 2):
        r = {"split": "train", "step": step, "loss": 10 * math.exp(-step / 20) + 1, "mlm_loss": 8 * math.exp(-step / 20) + 1,
             "mlm_acc": 0.5 * (1 - math.exp(-step / 15)), "grad_norm": 2 + math.sin(step), "lr": 1e-3 * min(1, step / 10),
             "tokens_per_s": 9000 + 100 * math.cos(step), "time_left_s": steps - step, "elapsed_s": step,
             "some_new_key": 1.0}
        if electra:
            r.update(disc_loss=0.6 * math.exp(-step / 30), disc_acc=0.85 + step / 1000, disc_baseline_acc=0.85,
                     replaced_frac=0.15 - step / 2000, disc_precision=step / 50, disc_recall=step / 60,
                     disc_balanced_acc=0.5 + step / 100)
        lines.append(r)
        if step % eval_every == 0:
            e = {"split": "eval", "step": step, "loss": r["loss"] + 0.1, "mlm_loss": r["mlm_loss"] + 0.1,
                 "mlm_acc": r["mlm_acc"] - 0.02, "unigram_entropy": 6.5, "token_spread": 0.4, "cls_cosine": 0.3,
                 "mean_cosine": None if step == eval_every else 0.5, "examples": 64, "warnings": []}
            if electra:
                e.update(disc_loss=r["disc_loss"] + 0.05, disc_acc=r["disc_acc"] - 0.01, disc_baseline_acc=0.85,
                         replaced_frac=0.14, disc_auc=0.6 + step / 200, disc_precision=0.4, disc_recall=0.3,
                         disc_balanced_acc=0.6)
            lines.append(e)
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"split": "train", "st'  # a line cut short by a kill
    (folder / "metrics.jsonl").write_text(text)
    return folder


def write_finetuned(folder, epochs=4):
    """finetune.json and history.jsonl as cli/finetune.py's save_classifier writes them."""
    folder.mkdir()
    (folder / "finetune.json").write_text(json.dumps({"recipe": {"metric": "f1", "epochs": epochs},
                                                      "columns": {"text_column": "sentence"}}))
    history = [{"epoch": e, "train_loss": 0.7 / e, "accuracy": 0.6 + e / 20, "f1": [0.5, 0.7, 0.65, 0.6][e - 1],
                "mcc": 0.1 * e, "seconds": 3.0 + e} for e in range(1, epochs + 1)]
    (folder / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    return folder


def drawn_panels(png):
    """The panel titles plot_run wrote into the PNG's text chunk (read back with Pillow, a matplotlib dependency)."""
    from PIL import Image

    with Image.open(png) as im:
        return im.text["Description"].split("; ")


def check_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > MIN_PNG_BYTES


@pytest.mark.parametrize("electra, panels", [(True, ELECTRA_PANELS), (False, MLM_PANELS)], ids=["electra", "mlm_only"])
def test_plot_pretraining_run(tmp_path, capsys, electra, panels):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed: " + PLOT_EXTRA)
    run = write_pretrain_run(tmp_path / "run", electra=electra)
    assert main(["plot", str(run)]) == 0
    png = run / "curves.png"
    assert capsys.readouterr().out.strip() == f"wrote {png}"
    check_png(png)
    assert drawn_panels(png) == panels
    assert sorted(p.name for p in run.iterdir()) == ["curves.png", "metrics.jsonl"]  # no temporary left behind


def test_plot_finetuned_classifier(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed: " + PLOT_EXTRA)
    clf = write_finetuned(tmp_path / "sst2")
    out = tmp_path / "elsewhere.png"
    assert main(["plot", str(clf), "--out", str(out)]) == 0
    check_png(out)
    assert drawn_panels(out) == ["training loss", "dev metrics", "seconds per epoch"]
    assert not (clf / "curves.png").exists()


def test_plot_finetune_history_inside_finetune_json(tmp_path):
    """A finetune.json that carries the history itself (no history.jsonl) is read the same way."""
    pytest.importorskip("matplotlib", reason="the plot extra is not installed: " + PLOT_EXTRA)
    clf = tmp_path / "stsb"
    clf.mkdir()
    history = [{"epoch": e, "train_loss": 1.0 / e, "pearson": 0.2 * e, "spearman": 0.18 * e, "mse": 2.0 / e}
               for e in (1, 2, 3)]
    (clf / "finetune.json").write_text(json.dumps({"recipe": {"metric": "pearson"}, "history": history}))
    path = plot_run(clf)
    assert path == clf / "curves.png"
    check_png(path)
    assert drawn_panels(path) == ["training loss", "dev metrics", "dev MSE"]


def test_plot_overwrites_and_library_default(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed: " + PLOT_EXTRA)
    run = write_pretrain_run(tmp_path / "run")
    (run / "curves.png").write_bytes(b"old")
    assert plot_run(run) == run / "curves.png"
    check_png(run / "curves.png")


def hide_matplotlib(monkeypatch):
    """Make `import matplotlib` (and every submodule already imported) fail, as in an install without the extra."""
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    run = write_pretrain_run(tmp_path / "run")
    hide_matplotlib(monkeypatch)
    assert plot_run(run) is None  # what a training run calls at its end: nothing written, no error
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "matplotlib" in err and PLOT_EXTRA in err
    assert PLOT_EXTRA == 'pip install -e ".[plot]"'
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("content", [None, "", "not json\n", '{"split": "train"',
                                     '{"split": "train", "step": 2, "unknown": 1.0}\n'],
                         ids=["no_files", "empty", "garbage", "cut_short", "unknown_keys_only"])
def test_plot_folder_with_nothing_to_plot(tmp_path, capsys, content):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed: " + PLOT_EXTRA)
    folder = tmp_path / "folder"
    folder.mkdir()
    if content is not None:
        (folder / "metrics.jsonl").write_text(content)
    assert main(["plot", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("electra-np plot: error: ") and err.count("\n") == 1
    assert str(folder) in err
    assert list(folder.iterdir()) == ([] if content is None else [folder / "metrics.jsonl"])


def test_plot_missing_folder(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed: " + PLOT_EXTRA)
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
