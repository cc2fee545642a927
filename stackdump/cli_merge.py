"""`stackdump merge FILE...` and `stackdump diff BEFORE AFTER`: commands beside the dump
itself (`cli.main` picks one by its first word), over dumps already written (merge.py). No
process is touched.

Exit status: 0 every input merged; 1 written, but some inputs were skipped (`--keep-going`);
2 bad usage or a bad input (named, with what is wrong with it); 4 the output could not be
written.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import click

from stackdump import merge
from stackdump.arguments import checked, parse_choice
from stackdump.cli_options import OUTPUT
from stackdump.cli_run import Run, produce
from stackdump.console import warn
from stackdump.errors import InvalidArgument
from stackdump.outcome import EXIT_OK, EXIT_PARTIAL
from stackdump.writers import registry as formats
from stackdump.writers.registry import View

MERGE_HELP = """Merge JSON dumps (or folded stacks) from many hosts and processes into one
picture: identical stacks grouped by function and file:line (never by address), biggest first,
with how many threads on how many hosts share each, and the stacks only a few hosts have called
out as outliers. A directory stands for the files in it. See docs/FORMAT.md "Merging dumps"."""

DIFF_HELP = """Compare two dumps, or two sets of dumps (a file or a directory each): the stacks
whose threads per process grew or shrank most, e.g. a sick host against healthy ones, or now
against an hour ago. See docs/FORMAT.md "Merging dumps"."""


def _common(kind: str):
    """The options `merge` and `diff` share; `kind` names the formats offered."""

    def add(command):
        for option in reversed(
            (
                OUTPUT,
                click.option(
                    "--format",
                    "output_format",
                    default="text",
                    show_default=True,
                    metavar="FORMAT",
                    help=formats.or_list(formats.for_kind(kind)) + ".",
                ),
                click.option(
                    "--keep-going",
                    is_flag=True,
                    help="Skip inputs that cannot be read (each named on stderr; exit 1) "
                    "instead of stopping at the first (exit 2).",
                ),
            )
        ):
            command = option(command)
        return command

    return add


@click.command(
    "merge", help=MERGE_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)  # fmt: skip
@click.argument("inputs", nargs=-1, required=True, metavar="FILE...")
@_common("merge")
@click.pass_obj
def merge_command(
    run: Run, inputs: Tuple[str, ...], output: Optional[str], output_format: str, keep_going: bool
) -> int:
    view = _view("merge", output_format)
    paths = _paths(inputs)

    def make() -> merge.Merged:
        return _none_left(merge.merge(paths, keep_going, by_host=view.format == "pprof"))

    return _skipped(produce(run, output, view, "merge", make).skipped)


@click.command(
    "diff", help=DIFF_HELP, context_settings={"help_option_names": ["-h", "--help"]}
)  # fmt: skip
@click.argument("before", metavar="BEFORE")
@click.argument("after", metavar="AFTER")
@_common("diff")
@click.pass_obj
def diff_command(
    run: Run, before: str, after: str, output: Optional[str], output_format: str, keep_going: bool
) -> int:
    view = _view("diff", output_format)
    sides = _paths([before]), _paths([after])

    def make() -> merge.Diff:
        return merge.diff(*(_none_left(merge.merge(paths, keep_going)) for paths in sides))

    result = produce(run, output, view, "diff", make)
    return _skipped([*result.before.skipped, *result.after.skipped])


def _view(kind: str, text: str) -> View:
    choices = formats.for_kind(kind)
    name = checked("--format", text, parse_choice("format", choices))
    formats.prepare(name, kind)
    return View(format=name)


def _paths(inputs: Sequence[str]) -> list:
    paths = merge.expand(inputs)
    if not paths:
        raise InvalidArgument(f"no input files in {', '.join(inputs)}")
    return paths


def _none_left(merged: merge.Merged) -> merge.Merged:
    """`merged`, unless no input could be read (exit 2)."""
    if not merged.inputs:
        raise InvalidArgument(
            "no input could be read: " + "; ".join(str(e) for e in merged.skipped)
        )
    return merged


def _skipped(skipped: Sequence[merge.BadInput]) -> int:
    warn([f"skipped {e}" for e in skipped])
    return EXIT_PARTIAL if skipped else EXIT_OK
