"""`etgnn ... --help`: descriptions keep their layout (no collapsed line continuations)."""
import argparse
import re

COLLAPSED = re.compile(r"\S {4,}--\w")  # "... quartz-ph         --n-structures": a joined "\\\n" continuation


def _parsers(parser, prefix="etgnn"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prefix} {name}")


def test_help_has_no_collapsed_continuations():
    from ase_etgnn.cli import build_parser

    seen = []
    for name, p in _parsers(build_parser()):
        text = p.format_help()
        bad = [line for line in text.splitlines() if COLLAPSED.search(line)]
        assert not bad, (name, bad)
        seen.append(name)
    assert {"etgnn train", "etgnn evaluate", "etgnn dfpt generate"} <= set(seen)
    helps = {name: p.format_help() for name, p in _parsers(build_parser())}
    # a continued command line stays on two lines, the backslash last
    assert re.search(r"--tag quartz-ph \\\n\s+--n-structures 100", helps["etgnn dfpt generate"])
    assert re.search(r"--set split_file=split2.json \\\n\s+--output-dir runs/ft", helps["etgnn train"])
    assert "by provenance tag and by labelled subset" in helps["etgnn evaluate"]
