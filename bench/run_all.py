"""The benchmark suite: every table of BENCHMARKS.md from one command, with a PNG per table.

    python bench/run_all.py                      # full sizes (≈2.5 h on 2 CPU cores)
    python bench/run_all.py --size smoke --out /tmp/b   # tiny sizes: what CI runs
    python bench/run_all.py --only engine_speed --merge  # re-measure one part, keep the rest

Each bench module measures its arms side by side in one run and returns
:class:`~bench_common.Section` tables whose headline figures are ratios of two arms measured in
the same repetition, with the spread over the repetitions. The sampler tables keep each
finished repetition under ``bench/results/`` and resume from there, so an interrupted run loses
no finished repetition (and ``python bench/sampler_comparison.py --size full --env alfworld``
can measure one env in a second process while this command measures the other).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_common import Section, machine, plot_chart  # noqa: E402

MODULES = {
    "samplers": "sampler_comparison",  # tables 1 and 2
    "forking": "env_forking",  # table 3
    "overhead": "harness_overhead",  # table 4
    "export": "export_speed",  # table 5
    "engine": "engine_prefix_cache",  # table 6
    "engine_speed": "engine_speed",  # tables 7 and 8
    "learning": "learning",  # tables 9 and 10 (hours at full size; resumable)
    "router": "router",  # table 11 (many engines: sglang-router policies, client routing)
    "collector": "collector_throughput",  # table 12 (driver, engine feed, writer, shards)
}
"""Suite parts, in BENCHMARKS.md order: ``--only`` name -> bench module."""

COMMAND = "python bench/run_all.py"


def run(size: str, only: list[str]) -> tuple[list[Section], dict[str, float]]:
    """Measure the chosen parts; return their sections and each part's seconds."""
    sections: list[Section] = []
    seconds = {}
    for part in only:
        t0 = time.perf_counter()
        module = importlib.import_module(MODULES[part])
        print(f"[bench] {part} ({MODULES[part]}.py, size {size}) ...", flush=True)
        sections += module.sections(size)
        seconds[part] = time.perf_counter() - t0
        print(f"[bench] {part} done in {seconds[part]:.0f} s", flush=True)
    return sections, seconds


GENERATED_PREAMBLE = ("# Benchmarks", "Written by ", "**Machine:**", "**Time per part")
"""How the paragraphs that :func:`write` generates above the sections begin."""


def old_parts(path: Path) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """An existing BENCHMARKS.md as ``({section title: its markdown}, {anchor: headline},
    [hand-written notes above the sections])``, for ``--merge``: the sections this invocation
    does not measure are kept as they were, and so are notes a person added to the preamble
    (such as which tables are stale), which a merge must not silently drop."""
    if not path.is_file():
        return {}, {}, []
    text = "\n" + path.read_text()
    preamble, *rest = text.split("\n## ")
    notes = [p.strip() for p in preamble.split("\n\n") if p.strip()]
    notes = [p for p in notes if not p.startswith(GENERATED_PREAMBLE)]
    blocks, headlines = {}, {}
    for block in rest:
        title, _, body = block.partition("\n")
        if title == "Headlines":
            for line in body.splitlines():
                if line.startswith("* ") and "(#" in line:
                    headlines[line.rsplit("(#", 1)[1].rstrip(")")] = line
        else:
            blocks[title] = f"## {title}\n{body.rstrip()}\n"
    return blocks, headlines, notes


def write(
    sections: list[Section], seconds: dict[str, float], size: str, out: Path, merge: bool = False
) -> Path:
    """``out/BENCHMARKS.md`` plus ``out/bench/figures/<slug>.png`` per section; with ``merge``
    the sections of the existing file that were not measured now are kept (and their
    headlines), the measured ones replace theirs in place or are appended."""
    figures = out / "bench" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    path = out / "BENCHMARKS.md"
    kept, kept_headlines, notes = old_parts(path) if merge else ({}, {}, [])
    host = machine()
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{COMMAND}{'' if size == 'full' else ' --size ' + size}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Every headline figure is a "
        "ratio of two arms measured side by side in the same run; `a (lo–hi)` is the median "
        "and the min–max range over the repetitions. Absolute seconds are for this machine "
        "only, and other jobs shared its cores.",
        "",
        *(line for note in notes for line in (note, "")),
        "**Machine:** " + ", ".join(f"{k} {v}" for k, v in host.items()),
        "",
        "**Time per part in this invocation:** "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items())
        + " (sampler repetitions already in `bench/results/` are loaded, not measured again; "
        "each sampler table gives its own measured time).",
        "",
    ]
    if merge:
        lines[-2] += (
            " Merged (`--merge`): only the parts above were measured in this invocation; the "
            "other sections are kept from earlier runs, each with its own setting and date."
        )
    new = {s.title: s for s in sections}
    titles = [*kept, *(t for t in new if t not in kept)]
    bullets = []
    for title in titles:
        if title in new and new[title].headline:
            bullets.append(f"* {new[title].headline} ([table](#{anchor(title)}))")
        elif title not in new and anchor(title) in kept_headlines:
            bullets.append(kept_headlines[anchor(title)])
    if bullets:
        lines += ["## Headlines", "", *bullets, ""]
    for title in titles:
        if title not in new:
            lines.append(kept[title])
            continue
        section, png = new[title], None
        if section.chart is not None:
            png = f"bench/figures/{section.slug}.png"
            plot_chart(section.chart, section.title, out / png)
        lines.append(section.markdown(png))
    path.write_text("\n".join(lines))
    return path


def anchor(title: str) -> str:
    """GitHub's heading anchor for ``title``."""
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--size",
        choices=("smoke", "modest", "full"),
        default="full",
        help="modest: the samplers part only (8 tasks per env, about 30 min)",
    )
    ap.add_argument(
        "--only", nargs="+", choices=list(MODULES), default=list(MODULES),
        help="parts to run (default: all, in this order)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=HERE.parent, help="folder for BENCHMARKS.md")
    ap.add_argument(
        "--saved-only", action="store_true",
        help="sampler tables from the repetitions already in bench/results (measure none)",
    )  # fmt: skip
    ap.add_argument(
        "--merge", action="store_true",
        help="keep the sections of the existing BENCHMARKS.md that this run does not measure",
    )  # fmt: skip
    args = ap.parse_args()
    if args.saved_only:
        os.environ["TREEGYM_BENCH_SAVED_ONLY"] = "1"
    only = [p for p in MODULES if p in args.only]
    if args.size == "modest" and only != ["samplers"]:
        ap.error("--size modest is defined for --only samplers alone")
    sections, seconds = run(args.size, only)
    path = write(sections, seconds, args.size, args.out, merge=args.merge)
    print(f"[bench] wrote {path} and {len([s for s in sections if s.chart])} figures")


if __name__ == "__main__":
    main()
