"""``treegym show TRAIN_DIR [--compare TRAIN_DIR2 …]``: learning curves of training runs.

A training folder's ``metrics.parquet`` (``treegym.harness.train``) becomes ``report.html``
beside it: one self-contained file (inline SVG, no external references) with the curves that
decide between samplers — held-out success (greedy and T=1) and the share of mixed-reward
groups against *cumulative engine tokens* (generated + computed prompt tokens, what the compute
was spent on) — every run overlaid, and a table of the last round of each run.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
CURVES = (
    ("eval_t1_success", "held-out success, T=1"),
    ("eval_greedy_success", "held-out success, greedy"),
    ("mixed_group_share", "mixed-reward groups (train)"),
    ("train_success", "train success"),
)


@dataclass
class Curve:
    label: str
    xs: list[float]
    ys: list[float]


def is_train_dir(path: Path) -> bool:
    return (path / "train.json").is_file() and (path / "metrics.parquet").is_file()


def load_metrics(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path / "metrics.parquet")
    return frame.sort_values("round").reset_index(drop=True)


def curves(runs: dict[str, pd.DataFrame], column: str) -> list[Curve]:
    out = []
    for label, frame in runs.items():
        if column not in frame:
            continue
        rows = frame[frame[column].notna()]
        out.append(Curve(label, rows["cum_engine_tokens"].astype(float).tolist(),
                         rows[column].astype(float).tolist()))  # fmt: skip
    return [c for c in out if c.xs]


def svg_chart(title: str, lines: list[Curve], width: int = 520, height: int = 300) -> str:
    """A line chart of ``lines`` against cumulative engine tokens (y in [0, 1])."""
    pad_l, pad_r, pad_t, pad_b = 48, 12, 28, 40
    x_max = max((max(c.xs) for c in lines), default=1.0) or 1.0

    def px(x: float) -> float:
        return pad_l + (width - pad_l - pad_r) * x / x_max

    def py(y: float) -> float:
        return height - pad_b - (height - pad_t - pad_b) * max(0.0, min(1.0, y))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{html.escape(title)}">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">'
             f"{html.escape(title)}</text>"]  # fmt: skip
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = py(tick)
        parts.append(f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{y}" y2="{y}" '
                     f'stroke="#ddd"/><text x="{pad_l - 6}" y="{y + 4}" text-anchor="end" '
                     f'font-size="10">{tick:.2f}</text>')  # fmt: skip
    for k in range(5):
        x = x_max * k / 4
        parts.append(f'<text x="{px(x)}" y="{height - pad_b + 14}" text-anchor="middle" '
                     f'font-size="10">{x / 1000:,.0f}k</text>')  # fmt: skip
    parts.append(f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle" font-size="11">'
                 "cumulative engine tokens</text>")  # fmt: skip
    for i, line in enumerate(lines):
        color = COLORS[i % len(COLORS)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(line.xs, line.ys, strict=True))
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" '
            f'points="{points}"><title>{html.escape(line.label)}</title></polyline>'
        )
        parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>'
                  for x, y in zip(line.xs, line.ys, strict=True)]  # fmt: skip
        parts.append(f'<text x="{pad_l + 8}" y="{pad_t + 14 * (i + 1)}" font-size="11" '
                     f'fill="{color}">{html.escape(line.label)}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def summary(runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The last round of each run, and its best held-out success."""
    rows = []
    for label, frame in runs.items():
        last = frame.iloc[-1]
        row = {"run": label, "rounds": int((frame["round"] >= 0).sum()),
               "engine tokens": int(last["cum_engine_tokens"])}  # fmt: skip
        for column, name in CURVES:
            if column in frame and frame[column].notna().any():
                row[name] = round(float(frame[column].dropna().iloc[-1]), 3)
        rows.append(row)
    return pd.DataFrame(rows)


def load_curves(paths: list[Path]) -> dict[str, pd.DataFrame]:
    """Metrics of each training folder, by name (the folder's path when names repeat)."""
    names = [p.name for p in paths]
    return {(p.name if names.count(p.name) == 1 else str(p)): load_metrics(p) for p in paths}


def write_report(paths: list[Path]) -> Path:
    """``paths[0]/report.html`` with every run's curves overlaid."""
    runs = load_curves(paths)
    charts = [svg_chart(name, curves(runs, column)) for column, name in CURVES
              if curves(runs, column)]  # fmt: skip
    table = summary(runs).to_html(index=False, border=0)
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>treegym train: "
            f"{html.escape(', '.join(runs))}</title><style>body{{font-family:sans-serif;"
            "margin:24px}}table{{border-collapse:collapse}}td,th{{padding:4px 10px;"
            "border-bottom:1px solid #ddd}}svg{{margin:8px}}</style></head><body>"
            f"<h2>treegym train: {html.escape(' vs '.join(runs))}</h2>{table}"
            f"<div>{''.join(charts)}</div></body></html>")  # fmt: skip
    out = paths[0] / "report.html"
    out.write_text(page)
    return out
