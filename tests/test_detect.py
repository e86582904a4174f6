"""`electra-np detect`: the discriminator's per-word probabilities of replacement, printed as aligned text (ANSI
colour on request), as one HTML page, after a pretraining-style corruption, and the bad inputs (exit code 2).
One tiny pretraining run serves every test, read as a run, as our own model.npz folder and as a Hugging Face
safetensors folder."""

import html
import io
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from electra_np import engine, hf
from electra_np.cli import main as cli
from electra_np.data.tokenizer import Tokenizer
from electra_np.train.render import Word, display_width, join_pieces, render_html, render_text

TINY = ["--hidden_size", "32", "--embedding_size", "16", "--intermediate_size", "64", "--num_hidden_layers", "1",
        "--num_attention_heads", "2", "--seq_len", "32", "--batch_size", "8", "--vocab_size", "300",
        "--backend", "numpy", "--log_every", "1", "--eval_examples", "16", "--eval_every", "0", "--steps", "2"]
ENGLISH = "The cat reads a table, and the dog writes a file."
CHINESE = "我们喜欢读书。"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def corpus_text() -> str:
    nouns = "cat dog bird parser module function value object list table server client file".split()
    verbs = "reads writes returns holds sends finds opens closes checks builds".split()
    rng = np.random.default_rng(0)
    docs = ["\n".join(f"the {rng.choice(nouns)} {rng.choice(verbs)} a {rng.choice(nouns)}." for _ in range(4))
            for _ in range(60)]
    docs += ["我们喜欢读书。\n今天天气很好。\n他写了一个程序。"] * 10
    return "\n\n".join(docs) + "\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ELECTRA_NP_CACHE", str(root / "cache"))
        (root / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
        run = root / "run"
        assert cli.main(["pretrain", "--corpus", str(root / "corpus.txt"), "--out_dir", str(run), *TINY]) == 0
    npz = root / "npz"  # our own format only: model.npz + config.json + vocab.txt
    shutil.copytree(run / "discriminator", npz)
    (npz / "model.safetensors").unlink()
    config, params, _ = hf.from_pretrained(npz, kind="discriminator")
    hf.save_pretrained(root / "hf", config, params, "discriminator")  # what transformers writes, plus the vocab
    shutil.copy(run / "vocab.txt", root / "hf" / "vocab.txt")
    return {"root": root, "run": run, "npz": npz, "hf": root / "hf"}


def expected(folder, sentence):
    """(words, probabilities) straight from engine.make_discriminator: sigmoid(logit), a word's the max of its
    pieces'."""
    config, w, _ = hf.from_pretrained(folder, kind="discriminator")
    tok = Tokenizer.from_file(folder / "vocab.txt")
    ids = np.array([[tok.cls_id] + tok.encode(sentence) + [tok.sep_id]])  # (1, T)
    logits = engine.make_discriminator(config, "numpy")(w, {"input_ids": ids})[0, 1:-1]  # (T - 2,)
    pieces = tok.convert_ids_to_tokens(ids[0, 1:-1])
    words, probs = [], []
    for piece, p in zip(pieces, 1 / (1 + np.exp(-logits.astype(np.float64)))):
        if piece.startswith("##"):
            words[-1] += piece[2:]
            probs[-1] = max(probs[-1], p)
        else:
            words.append(piece)
            probs.append(p)
    return words, np.array(probs)


def detect(capsys, *args, model=None):
    capsys.readouterr()
    code = cli.main(["detect", "--model", str(model), "--backend", "numpy", *args])
    out, err = capsys.readouterr()
    return code, out, err


def blocks(out):
    return [b.splitlines() for b in out.strip("\n").split("\n\n")]


def starts(line):
    """Display columns at which each cell of a line begins."""
    cols, col, prev = [], 0, " "
    for ch in line:
        if ch != " " and prev == " ":
            cols.append(col)
        col += display_width(ch)
        prev = ch
    return cols


def cells(line, at):
    """The cells of a line cut at the given display columns."""
    out, col = [""] * len(at), 0
    for ch in line:
        j = sum(a <= col for a in at) - 1
        if j >= 0:
            out[j] += ch
        col += display_width(ch)
    return [c.strip() for c in out]


# ----------------------------------------------------------------------------- scores

@pytest.mark.parametrize("kind", ["run", "npz", "hf"])
def test_probabilities_equal_the_discriminator_logits(env, capsys, kind):
    code, out, err = detect(capsys, ENGLISH, CHINESE, model=env[kind])
    assert code == 0, err
    assert "\x1b" not in out  # not a terminal: plain text
    got = blocks(out)
    assert len(got) == 2 and all(len(b) == 2 for b in got)  # one line of words per sentence, probabilities under
    folder = env["run"] / "discriminator" if kind == "run" else env[kind]
    for (words_line, probs_line), sentence in zip(got, (ENGLISH, CHINESE)):
        words, probs = expected(folder, sentence)
        assert words_line.split() == words
        shown = np.array([float(x) for x in probs_line.split()])
        assert np.all((shown >= 0) & (shown <= 1))
        np.testing.assert_allclose(shown, probs, atol=0.005 + 1e-9)


def test_colour_on_request_and_the_same_layout(env, capsys):
    _, plain, _ = detect(capsys, ENGLISH, model=env["run"])
    code, coloured, _ = detect(capsys, ENGLISH, "--color", "always", model=env["run"])
    assert code == 0 and "\x1b[" in coloured
    assert ANSI.sub("", coloured) == plain
    _, never, _ = detect(capsys, ENGLISH, "--color", "never", model=env["run"])
    assert never == plain


def test_chinese_columns_line_up_by_display_width(env, capsys):
    code, out, _ = detect(capsys, CHINESE, model=env["run"])
    (words_line, probs_line), = blocks(out)
    assert words_line.split() == list("我们喜欢读书。")
    assert display_width(words_line) > len(words_line)  # wide characters: two cells each
    assert starts(words_line) == starts(probs_line) and len(starts(probs_line)) == 7


def test_word_pieces_are_joined_and_pieces_option_splits_them(env, capsys):
    tok = Tokenizer.from_file(env["run"] / "vocab.txt")
    word = next(w for w in ("catdog", "tablefile", "birdlist") if len(tok.tokenize(w)) > 1)
    _, out, _ = detect(capsys, f"the {word} reads", model=env["run"])
    assert blocks(out)[0][0].split() == ["the", word, "reads"]
    _, out, _ = detect(capsys, f"the {word} reads", "--pieces", model=env["run"])
    assert blocks(out)[0][0].split() == ["the", *tok.tokenize(word), "reads"]


# ----------------------------------------------------------------------------- HTML, stdin, --corrupt

def test_html_page_is_self_contained(env, capsys, tmp_path):
    page = tmp_path / "out.html"
    code, out, err = detect(capsys, ENGLISH, CHINESE, "--html", str(page), model=env["run"])
    assert code == 0 and str(page) in err
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text) and "<script" not in text and "<link" not in text
    for sentence in (ENGLISH, CHINESE):
        words, probs = expected(env["run"] / "discriminator", sentence)
        for w, p in zip(words, probs):
            assert f">{html.escape(w)}</span>" in text
            assert f"p(replaced) = {p:.4f}" in text


def test_stdin_and_file(env, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "stdin", io.StringIO("the cat reads a file.\n\n  \nthe dog holds a list.\n"))
    code, out, _ = detect(capsys, "-", model=env["run"])
    assert code == 0 and [b[0].split() for b in blocks(out)] == [["the", "cat", "reads", "a", "file", "."],
                                                                 ["the", "dog", "holds", "a", "list", "."]]
    f = tmp_path / "s.txt"
    f.write_text(CHINESE + "\n", encoding="utf-8")
    code, out, _ = detect(capsys, "the cat", "--file", str(f), model=env["run"])
    assert code == 0 and len(blocks(out)) == 2


def test_installed_script_reads_a_pipe_and_prints_plain_text(env):
    out = subprocess.run(["electra-np", "detect", "--model", str(env["run"]), "--backend", "numpy", "-"],
                         input="the cat reads a file.\n", capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and out.stdout.splitlines()[0].split() == ["the", "cat", "reads", "a", "file", "."]


def test_corrupt_marks_caught_and_missed_consistently(env, capsys):
    sentence = "the cat reads a table and the dog writes a file and the bird opens a list"
    args = [sentence, "--corrupt", "--mask_prob", "0.4", "--seed", "3"]
    code, out, err = detect(capsys, *args, model=env["run"])
    assert code == 0, err
    lines = out.splitlines()
    words_line, originals_line, probs_line, verdicts_line, summary = lines
    at = starts(probs_line)
    words, originals = cells(words_line, at), cells(originals_line, at)
    probs, verdicts = [float(p) for p in cells(probs_line, at)], cells(verdicts_line, at)
    assert len(words) == len(sentence.split())
    for word, original, p, verdict, given in zip(words, originals, probs, verdicts, sentence.split()):
        if original:  # the generator replaced this word
            assert original == given and word != given and verdict in ("caught", "missed")
            assert (verdict == "caught") == (p > 0.5) or p == 0.5
        else:
            assert word == given and verdict in ("", "false-alarm")
            assert (verdict == "false-alarm") == (p > 0.5) or p == 0.5
    n = sum(bool(o) for o in originals)
    assert n >= 1
    assert summary == (f"replaced {n}: caught {verdicts.count('caught')}, missed {verdicts.count('missed')}; "
                       f"false alarms {verdicts.count('false-alarm')}")
    assert detect(capsys, *args, model=env["run"])[1] == out  # --seed: the same replacements
    assert detect(capsys, *args[:-1], "4", model=env["run"])[1] != out


def test_renderer_verdicts_and_html_on_given_numbers():
    tokens = ["the", "dog", "##s", "sat", "##x", "."]
    originals = ["the", "cat", "##s", "sat", "##x", "."]
    probs = [0.1, 0.3, 0.9, 0.7, 0.2, 0.4]
    words = join_pieces(tokens, probs, originals)
    assert words == [Word("the", 0.1, False), Word("dogs", 0.9, True, "cats"), Word("satx", 0.7, False),
                     Word(".", 0.4, False)]
    assert [w.verdict for w in words] == ["", "caught", "false-alarm", ""]
    assert join_pieces(["##a", "b"], [0.6, 0.2], ["x", "##y"])[0].text == "##ab"  # boundaries: the originals'
    text = render_text(words, width=12)  # wrapped into blocks of at most 12 cells
    assert all(display_width(line) <= 12 for line in text.splitlines())
    assert "caught" in text and "false-alarm" in text
    page = render_html([("one", words)])
    assert 'class="t caught"' in page and 'class="t false-alarm"' in page and "original: cats" in page


# ----------------------------------------------------------------------------- bad input

def test_long_sentence_is_truncated_with_a_note(env, capsys):
    code, out, err = detect(capsys, " ".join(["cat"] * 200), model=env["run"])
    assert code == 0 and "note: sentence 1 has 200 tokens; scoring the first 126" in err
    assert len(blocks(out)[0][0].split()) == 126


@pytest.mark.parametrize("case", ["empty", "no_discriminator", "generator", "missing_file", "missing_folder",
                                  "no_sentence", "empty_file"])
def test_bad_input_is_one_line_and_exit_2(env, capsys, monkeypatch, tmp_path, case):
    (tmp_path / "gen_only" / "generator").mkdir(parents=True)
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    model, args, words = {
        "empty": (env["run"], ["the cat", "  "], ["sentence 2 is empty"]),
        "no_discriminator": (tmp_path / "gen_only", ["the cat"], ["no discriminator"]),
        "generator": (env["run"] / "generator", ["the cat"], ["ElectraForMaskedLM"]),
        "missing_file": (env["run"], ["--file", str(tmp_path / "nope.txt")], ["nope.txt", "no such file"]),
        "missing_folder": (tmp_path / "nope", ["the cat"], ["no such folder"]),
        "no_sentence": (env["run"], [], ["no sentence"]),
        "empty_file": (env["run"], ["--file", str(tmp_path / "blank.txt")], ["blank.txt", "blank"]),
    }[case]
    code, out, err = detect(capsys, *args, model=model)
    assert code == cli.EXIT_BAD_INPUT and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("electra-np detect: error:"), err
    for w in words:
        assert w in err


def test_help_shows_description_and_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["detect", "--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and "probability of having been replaced" in text.replace("\n", " ").replace("  ", " ")
    for option in ("--model", "--file", "--html", "--color", "--corrupt", "--seed", "--pieces"):
        assert option in text
    assert "(default:runs/electra-tiny)" in re.sub(r"\s+", "", text)
