"""What people expect of a Python CLI: --version, choices in --help, descriptions, seeds from files or
stdin, JSON Lines for scripts, and an end-of-training hint that can be pasted into a shell elsewhere."""

import argparse
import importlib.metadata
import io
import json
import os
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import chargen
from chargen.cli import build_parser, main, sample_command
from chargen.config import ModelConfig, SampleConfig, TrainConfig
from chargen.errors import ConfigError

from conftest import ROOT, TINY

CHOICE_FIELDS = [(cls, f) for cls in (ModelConfig, TrainConfig, SampleConfig) for f in fields(cls) if "choices" in f.metadata]


def run(*args, cwd=None, input=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "chargen", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, input=input, timeout=600)


def _subparsers():
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, small_text):
    """A tiny run trained by the CLI under a --root with a space in it; its stderr holds the hint."""
    d = tmp_path_factory.mktemp("cli")
    (d / "book.txt").write_text(small_text, encoding="utf-8")
    r = run("train", "book.txt", "--root", "my runs", "--name", "tiny-book", "--epochs", 1, "--seed", 1,
            "--units", ",".join(map(str, TINY["units"])), "--embed", TINY["embed"], "--batch-size", TINY["batch_size"],
            "--seq-len", TINY["seq_len"], cwd=d)
    assert r.returncode == 0, r.stderr
    return d, r.stderr


def test_version_is_the_packages_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"chargen {chargen.__version__}"
    assert importlib.metadata.version("chargen") == chargen.__version__  # pyproject reads the same string


def test_every_fixed_set_option_has_its_choices_in_the_parser_and_in_help():
    assert {f.name for _, f in CHOICE_FIELDS} == {"cell", "lr_decay", "kernel", "tokenizer", "distribute", "precision"}
    train = _subparsers()["train"]
    by_dest = {a.dest: a for a in train._actions}
    text = train.format_help()
    for _, f in CHOICE_FIELDS:
        assert tuple(by_dest[f.name].choices) == f.metadata["choices"], f.name
        assert "{" + ",".join(f.metadata["choices"]) + "}" in text, f.name


@pytest.mark.parametrize("flag, bad", [("--lr-decay", "linear"), ("--kernel", "cudnn"), ("--lstm", "cudnn"),
                                       ("--tokenizer", "wordpiece"), ("--distribute", "gpu"), ("--precision", "half"),
                                       ("--cell", "rnn")])
def test_a_value_outside_the_choices_is_refused_by_the_parser(tmp_path, capsys, flag, bad):
    with pytest.raises(SystemExit) as stop:
        main(["train", str(tmp_path / "book.txt"), flag, bad])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and repr(bad) in err and "choose from" in err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("cls, name", [(TrainConfig, "lr_decay"), (TrainConfig, "kernel"), (TrainConfig, "tokenizer"),
                                       (TrainConfig, "distribute"), (ModelConfig, "cell")])
def test_the_library_refuses_the_same_values_with_the_same_list(cls, name):
    allowed = next(f.metadata["choices"] for _, f in CHOICE_FIELDS if f.name == name)
    extra = {"vocab_size": 5} if cls is ModelConfig else {}
    for value in allowed:
        cls(**{name: value, **extra}).validate()
    with pytest.raises(ConfigError, match=f"^{name} must be one of {', '.join(allowed)}, got 'nope'"):
        cls(**{name: "nope", **extra}).validate()


def test_every_command_has_a_description():
    commands = _subparsers()
    assert set(commands) == {"train", "sample", "export", "eval", "history", "serve"}
    for name, parser in commands.items():
        assert parser.description and len(parser.description) > 60, name
    train = " ".join(commands["train"].format_help().split())
    assert "folder of .txt files" in train and "- to read standard input" in train


def test_the_hint_after_training_samples_the_run_from_another_folder(cli_run, tmp_path):
    d, stderr = cli_run
    hint = stderr.strip().splitlines()[-1]
    command = hint.split("(sample with: ", 1)[1].rstrip(")")
    argv = shlex.split(command)
    assert argv[:2] == ["chargen", "sample"] and argv[argv.index("--checkpoint") + 1] == "tiny-book"
    assert Path(argv[argv.index("--root") + 1]) == d / "my runs"  # absolute, so the folder it runs in does not matter
    r = run(*argv[1:], "--length", 30, "--rng-seed", 2, cwd=tmp_path)  # tmp_path has no runs at all
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.rstrip("\n")) == 30


def test_the_hint_leaves_out_the_default_root_and_quotes_paths():
    assert sample_command(Path("checkpoints") / "alphabet") == "chargen sample --checkpoint alphabet"
    assert sample_command(Path("/x/it's mine") / "b") == "chargen sample --checkpoint b --root '/x/it'\"'\"'s mine'"


def _sample(capsys, *args) -> str:
    """`chargen sample ARGS` in this process (the same parser and handlers, no second TensorFlow start-up)."""
    capsys.readouterr()
    assert main(["sample", *map(str, args)]) == 0
    return capsys.readouterr().out


def test_a_seed_from_a_file_or_stdin_is_the_same_seed_as_on_the_command_line(cli_run, capsys, monkeypatch):
    d, _ = cli_run
    monkeypatch.chdir(d)
    seed = "the state\n"  # a final newline is part of the seed
    (d / "seed.txt").write_text(seed, encoding="utf-8")
    common = ["--root", "my runs", "--length", 40, "--rng-seed", 5, "--num-samples", 3, "--json"]
    given = _sample(capsys, "--seed", seed, *common)
    from_file = _sample(capsys, "--seed-file", "seed.txt", *common)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(seed.encode())))
    from_stdin = _sample(capsys, "--seed", "-", *common)
    assert given == from_file == from_stdin
    rows = [json.loads(line) for line in given.splitlines()]
    assert [row["sample"] for row in rows] == [1, 2, 3]
    assert all(set(row) == {"sample", "seed", "text"} and row["seed"] == seed and len(row["text"]) == 40 for row in rows)
    assert len({row["text"] for row in rows}) == 3  # independent samples
    other = _sample(capsys, "--seed", "the state", *common)  # without the newline: another seed, other text
    assert [json.loads(line)["text"] for line in other.splitlines()] != [row["text"] for row in rows]


def test_one_json_sample_is_the_text_the_plain_command_prints(cli_run, capsys, monkeypatch):
    monkeypatch.chdir(cli_run[0])
    common = ["--root", "my runs", "--seed", "the ", "--length", 30, "--rng-seed", 7]
    plain = _sample(capsys, *common)
    as_json = _sample(capsys, *common, "--json", "--echo-seed")  # --echo-seed: the seed stays in "seed" only
    (line,) = as_json.splitlines()
    assert json.loads(line) == {"sample": 1, "seed": "the ", "text": plain.rstrip("\n")}


@pytest.mark.parametrize("args, needle", [
    (["--seed-file", "missing.txt"], "--seed-file missing.txt: no such file"),
    (["--seed-file", "."], "--seed-file .: is a folder"),
    (["--seed-file", "latin1.txt"], "--seed-file latin1.txt: not valid UTF-8 at byte offset 2"),
    (["--seed", "-"], "--seed - (standard input): not valid UTF-8 at byte offset 2"),
])
def test_an_unreadable_seed_is_one_line_and_exit_2(tmp_path, args, needle):
    (tmp_path / "latin1.txt").write_bytes(b"ab\xe9")
    r = subprocess.run([sys.executable, "-m", "chargen", "sample", *args], cwd=tmp_path, input=b"ab\xe9",
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=600)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_seed_and_seed_file_are_mutually_exclusive(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["sample", "--seed", "a", "--seed-file", "x.txt"])
    assert stop.value.code == 2 and "not allowed with" in capsys.readouterr().err
