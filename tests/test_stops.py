"""Stop strings (chargen.stops): the one rule `chargen sample --stop` and the server share."""

import pytest

import chargen
from chargen.errors import ConfigError
from chargen.stops import StopStrings, check_stops, unescape


def _first_stop(pieces, stops):
    watch = StopStrings(stops)
    for n, piece in enumerate(pieces, 1):
        found = watch.hit(piece)
        if found:
            return n, found
    return None


def test_a_stop_string_is_found_across_pieces_and_the_first_to_end_wins():
    assert _first_stop(list("the state of"), ["state"]) == (9, "state")
    assert _first_stop(["th", "e s", "tate", " of"], ["state"]) == (3, "state")  # BPE-like pieces
    assert _first_stop(list("abcd"), ["bcd", "bc"]) == (3, "bc")  # "bc" ends before "bcd"
    assert _first_stop(list("abab"), ["ba"]) == (3, "ba")
    assert _first_stop(list("no match here"), ["xyz"]) is None
    assert _first_stop(list("anything"), []) is None


@pytest.mark.parametrize("bad", ["one string", [""], ["x"] * 17, [1], ["y" * 201], {"a": 1}])
def test_bad_stop_lists_are_refused_naming_the_argument(bad):
    with pytest.raises(ConfigError, match="^stop "):
        check_stops(bad)


def test_unescape():
    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb\\n") == "a\tb\\n" and unescape("x\\") == "x\\"
    assert unescape(r"\q") == r"\q"


def test_generation_stops_with_the_token_that_completes_a_stop_string(trained_run):
    gen = chargen.load(trained_run.run_dir, which="last")
    full = gen.generate("the ", 300, temperature=1.0, rng_seed=11)
    stop = full[40:42]  # a pair that occurs in this text; it may occur earlier too
    end = full.index(stop) + len(stop)
    gen.reset()
    short = gen.generate("the ", 300, temperature=1.0, rng_seed=11, stop=[stop, "\x00never"])
    assert short == full[:end] and short.endswith(stop)
    # the state has read exactly the text returned: generating on continues as the full text did
    gen.reset()
    assert "".join(gen.stream("the ", 300, temperature=1.0, rng_seed=11, stop=[stop])) == short
    many = list(gen.stream_many("the ", 3, 300, temperature=1.0, rng_seed=4, stop=[" "]))
    texts = ["".join(step[i] for step in many) for i in range(3)]
    assert all(t.endswith(" ") and t.count(" ") == 1 for t in texts)
    assert len(many) == max(len(t) for t in texts)  # ends when every sample has stopped


def test_cli_stop_matches_the_library_and_refuses_an_empty_stop(trained_run, tmp_path):
    from test_cli import chargen as run_cli

    gen = chargen.load(trained_run.run_dir, which="best")
    full = gen.generate("the ", 400, temperature=1.0, rng_seed=5)
    stop = full[full.index("\n", 20) - 1:][:2]  # a character and a newline: typed as X\n
    want = full[:full.index(stop) + 2]
    r = run_cli("sample", "--checkpoint", trained_run.run_dir, "--seed", "the ", "--length", 400,
                "--temperature", 1.0, "--rng-seed", 5, "--stop", stop[0] + r"\n", "--stop", "~never~")
    assert r.returncode == 0, r.stderr
    assert r.stdout[:-1] == want and len(want) < len(full)  # the CLI adds one newline at the end
    bad = run_cli("sample", "--checkpoint", trained_run.run_dir, "--stop", "")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--stop must hold strings" in bad.stderr
