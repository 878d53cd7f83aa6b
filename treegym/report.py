"""The run report: a summary of a run folder for the terminal, and ``RUN/report.html``.

:func:`summarize` computes every figure from the run's own files (``manifest.json``, the
ledger's per-task budgets, ``nodes.parquet``, ``samples.parquet``), so ``treegym collect``'s
final table and ``treegym show`` agree. :func:`write_html` writes one self-contained HTML file
— inline CSS, inline JavaScript, inline SVG, the data as inline JSON; nothing is fetched when
it is viewed — with an interactive tree view per task (nodes coloured by value; click a node to
read its turn; branch points drawn larger with a ring) and plots (reward distribution, tokens
per leaf, budget breakdown, advantage histogram). Given two runs it puts them side by side.

The chain-baseline estimate is what chain sampling would generate for the same training
trajectories: each trajectory's generated tokens counted in full, with no shared trunk.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from treegym.harness.loaders import Run
from treegym.harness.selective import INFO_KEY as GATE_KEY
from treegym.policies.react import tidy_observation

OBS_CHARS = 4000
"""Observation text kept per node in the HTML (the parquet file has all of it)."""
TREE_TASKS = 200
"""Tasks whose trees the HTML carries (plots use every task)."""
COLORS = ("#3b6fb6", "#e07b39")


# ---------------------------------------------------------------------- figures
@dataclass
class Summary:
    """Figures of one run (see :func:`summarize`)."""

    label: str
    path: Path
    figures: dict[str, Any]
    rewards: list[float]
    tokens_per_leaf: list[int]
    advantages: list[float]
    advantage_column: str | None
    trunk_tokens: int
    branch_tokens: int


def _trunk_nodes(rows: list[dict[str, Any]]) -> set[tuple[str, int, int]]:
    """Nodes on each tree's first chain (root → first child → …): the trunk the sampler grew
    before it branched. Children are created after parents, so the first child has the
    smallest id."""
    first: dict[tuple[str, int, int], int] = {}
    for r in rows:
        if r["parent_id"] is not None:
            key = (r["task_id"], r["tree_index"], r["parent_id"])
            first[key] = min(first.get(key, r["node_id"]), r["node_id"])
    trunk = set()
    for r in rows:
        if r["parent_id"] is None:
            task, tree, node = r["task_id"], r["tree_index"], r["node_id"]
            while (task, tree, node) in first:
                node = first[(task, tree, node)]
                trunk.add((task, tree, node))
    return trunk


def run_status(
    status: str | None, tasks: int, failed_tasks: int, leaves: int, failed: int, training: int
) -> str | None:
    """The manifest's status, except that a finished run with nothing to train on because
    everything failed does not say "complete" (``failed`` branches of ``leaves`` grown)."""
    if status != "complete" or training or not (failed_tasks or failed) or failed < leaves:
        return status
    return "failed: every task failed" if failed_tasks == tasks else "failed: every branch failed"


def gated_groups(rows: list[dict[str, Any]]) -> int:
    """Tasks whose group the Selective Rollout gate stopped, from the decision recorded on
    the roots (a group gated after all its chains had ended has no leaf ended ``gated``)."""
    return len({r["task_id"] for r in rows
                if r["parent_id"] is None
                and json.loads(r["info"] or "{}").get(GATE_KEY, {}).get("gated")})  # fmt: skip


def summarize(run: Run, label: str | None = None) -> Summary:
    """Every figure the report shows, from the run's files."""
    m, b = run.manifest, run.budget
    cfg = m.get("config") or {}
    collect = cfg.get("collect") or {}
    nodes = run.nodes_table
    samples = run.samples_table
    gen_len = pc.list_value_length(nodes["generated_ids"]).fill_null(0).to_pylist()
    rows = nodes.select(["task_id", "tree_index", "node_id", "parent_id", "training", "info",
                         "ended"]).to_pylist()  # fmt: skip
    trunk = _trunk_nodes(rows)
    trunk_tokens = branch_tokens = 0
    won: dict[tuple[str, int, int], bool | None] = {}
    grown_leaves = 0
    has_child = {(r["task_id"], r["tree_index"], r["parent_id"]) for r in rows}
    for r, n in zip(rows, gen_len, strict=True):
        key = (r["task_id"], r["tree_index"], r["node_id"])
        if r["parent_id"] is None:
            continue
        if key in trunk:
            trunk_tokens += n
        else:
            branch_tokens += n
        if key not in has_child:
            grown_leaves += 1
        if r["training"]:
            info = json.loads(r["info"] or "{}")
            won[key] = bool(info["won"]) if "won" in info else None
    sample_keys = samples.select(["task_id", "tree_index", "leaf_id", "reward"]).to_pylist()
    rewards = [float(s["reward"]) for s in sample_keys]
    wins = [
        won.get((s["task_id"], s["tree_index"], s["leaf_id"]))
        if won.get((s["task_id"], s["tree_index"], s["leaf_id"])) is not None
        else s["reward"] > 0
        for s in sample_keys
    ]
    masks = samples["loss_mask"]
    tokens_per_leaf = [int(sum(x)) for x in masks.to_pylist()]
    chain_estimate = sum(tokens_per_leaf)
    estimators = list(run.estimators or m.get("estimators") or [])
    adv_col = next((f"adv_{e}" for e in estimators if f"adv_{e}" in samples.column_names), None)
    advantages = (
        [float(a) for a in samples[adv_col].to_pylist() if a is not None and math.isfinite(a)]
        if adv_col
        else []
    )
    sampler = m.get("sampler") or {}
    sampler_text = " ".join(
        [collect.get("sampler") or sampler.get("name", "?")]
        + [f"{k}={v}" for k, v in (collect.get("sampler_params") or {}).items()]
        + ([f"+ {collect['gate']}"] if collect.get("gate") else [])
        + [f"{k}={v}" for k, v in (collect.get("gate_params") or {}).items()]
    )
    policy = m.get("policy") or {}
    wall = (m.get("collect") or {}).get("wall_s")
    failed_tasks = sum(1 for e in run.ledger if e.get("error"))
    status = run_status(m.get("status"), len(run.ledger), failed_tasks, grown_leaves,
                        b.failed_branches, len(rewards))  # fmt: skip
    figures: dict[str, Any] = {
        "run": m.get("run_id"),
        "status": status,
        "env": collect.get("env") or cfg.get("env") or "?",
        "tasks source": collect.get("tasks") or "—",
        "sampler": sampler_text,
        "policy": collect.get("policy") or policy.get("policy") or "?",
        "tasks": len(run.ledger),
        "failed tasks": failed_tasks,
        "leaves (training)": len(rewards),
        "leaves grown": grown_leaves,
        "distinct trajectories": b.distinct_leaves,
        "success rate": (sum(wins) / len(wins)) if wins else None,
        "mean reward": (sum(rewards) / len(rewards)) if rewards else None,
        "zero-variance groups": (b.zero_variance_groups / b.groups) if b.groups else None,
        "tokens generated": b.generated_tokens,
        "chain-baseline estimate": chain_estimate,
        "generated / chain": (b.generated_tokens / chain_estimate) if chain_estimate else None,
        "prompt tokens": b.prompt_tokens,
        "prefix-cache hit rate": b.cache_hit_rate if b.prompt_tokens else None,
        "computed prompt tokens": b.computed_prompt_tokens,
        "env steps": b.env_steps,
        "restores": b.restores,
        "failed branches": b.failed_branches,
        "wall time": wall,
        "setup time": (m.get("collect") or {}).get("setup_s"),
        "policy seconds": b.policy_s,
    }
    if sampler.get("name") == "selective":
        figures["gated groups"] = gated_groups(rows)
    if policy.get("warning"):  # e.g. an SGLang server that ignores sampling seeds
        figures["policy warning"] = policy["warning"]
    return Summary(
        label or run.path.name, run.path, figures, rewards, tokens_per_leaf, advantages,
        adv_col, trunk_tokens, branch_tokens,
    )  # fmt: skip


def fmt(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key in ("success rate", "zero-variance groups", "prefix-cache hit rate"):
        return f"{100 * value:.1f}%"
    if key == "generated / chain":
        return f"{value:.2f}×"
    if key in ("wall time", "setup time", "policy seconds"):
        return f"{value:,.1f} s"
    if key == "mean reward":
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


RATIO_KEYS = (
    "leaves (training)", "leaves grown", "distinct trajectories", "success rate", "mean reward",
    "zero-variance groups", "tokens generated", "chain-baseline estimate", "prompt tokens",
    "computed prompt tokens", "env steps", "wall time", "policy seconds",
)  # fmt: skip


def summary_rows(summaries: Sequence[Summary]) -> list[list[str]]:
    """``[metric, run A, (run B, B/A)]`` rows (the terminal table and the HTML table)."""
    out = []
    for key in summaries[0].figures:
        row = [key, *(fmt(key, s.figures.get(key)) for s in summaries)]
        if len(summaries) == 2:
            a, b = summaries[0].figures.get(key), summaries[1].figures.get(key)
            ok = key in RATIO_KEYS and isinstance(a, (int, float)) and isinstance(b, (int, float))
            row.append(f"{b / a:.2f}" if ok and a else "")
        out.append(row)
    return out


def files_of(run_path: Path) -> list[tuple[str, Path]]:
    return [
        (name, run_path / name)
        for name in ("samples.parquet", "nodes.parquet", "manifest.json", "report.html")
        if (run_path / name).exists()
    ]


def rich_summary(summaries: Sequence[Summary], title: str = "run summary") -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    for s in summaries:
        table.add_column(s.label, justify="right", overflow="fold")
    if len(summaries) == 2:
        table.add_column(f"{summaries[1].label} / {summaries[0].label}", justify="right")
    for row in summary_rows(summaries):
        table.add_row(*row)
    return table


# ---------------------------------------------------------------------- SVG plots
def _nice(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10 or float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.2g}"


def svg_histogram(
    series: Sequence[tuple[str, str, Sequence[float]]], title: str, xlabel: str, bins: int = 20
) -> str:
    """Overlaid histograms (one per run) as an inline SVG string."""
    w, h, ml, mr, mt, mb = 420, 240, 44, 12, 28, 40
    values = [v for _, _, vs in series for v in vs]
    head = (f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            f'role="img" aria-label="{html.escape(title)}">'
            f'<text x="{w / 2}" y="16" class="ptitle">{html.escape(title)}</text>')  # fmt: skip
    if not values:
        return head + f'<text x="{w / 2}" y="{h / 2}" class="empty">no data</text></svg>'
    lo, hi = min(values), max(values)
    distinct = sorted(set(values))
    integers = all(float(v).is_integer() for v in distinct)
    if (len(distinct) <= bins and integers and hi - lo <= 2 * bins) or hi == lo:
        edges_centers = centers = distinct  # one bar per distinct value
        width_units = 1.0
        if len(distinct) > 1:
            width_units = min(b - a for a, b in itertools.pairwise(distinct))
        lo, hi = distinct[0] - width_units / 2, distinct[-1] + width_units / 2
        nb = len(distinct)
        counts = [[sum(1 for v in vs if v == c) for c in edges_centers] for _, _, vs in series]
        lefts = [c - width_units / 2 for c in edges_centers]
        bw = width_units
    else:
        nb, centers = bins, None
        bw = (hi - lo) / nb
        lefts = [lo + i * bw for i in range(nb)]
        counts = [[0] * nb for _ in series]
        for si, (_, _, vs) in enumerate(series):
            for v in vs:
                counts[si][min(nb - 1, int((v - lo) / bw))] += 1
    top = max(max(c) for c in counts) or 1
    pw, ph = w - ml - mr, h - mt - mb

    def x(v: float) -> float:
        return ml + (v - lo) / (hi - lo or 1) * pw

    parts = [head]
    k = len(series)
    for si, ((label, color, _), cs) in enumerate(zip(series, counts, strict=True)):
        for left, c in zip(lefts, cs, strict=True):
            if not c:
                continue
            x0 = x(left) + (x(left + bw) - x(left)) * si / k
            bwpx = max(1.0, (x(left + bw) - x(left)) / k - 1)
            bh = c / top * ph
            parts.append(
                f'<rect x="{x0:.1f}" y="{mt + ph - bh:.1f}" width="{bwpx:.1f}" height="{bh:.1f}" '
                f'fill="{color}"><title>{html.escape(label)}: {c} in '
                f"[{_nice(left)}, {_nice(left + bw)})</title></rect>"
            )
    parts.append(f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" class="axis"/>')
    parts.append(f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" class="axis"/>')
    ticks = centers if centers is not None and len(centers) <= 8 else [lo, (lo + hi) / 2, hi]
    for t in ticks:
        t = 0.0 if abs(t) < 1e-9 * max(1.0, hi - lo) else t
        parts.append(f'<text x="{x(t):.1f}" y="{mt + ph + 14}" class="tick">{_nice(t)}</text>')
    parts.append(f'<text x="{ml - 4}" y="{mt + 8}" class="tick end">{top}</text>')
    parts.append(f'<text x="{ml - 4}" y="{mt + ph}" class="tick end">0</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{h - 6}" class="xlabel">{html.escape(xlabel)}</text>')
    if k > 1:
        for si, (label, color, _) in enumerate(series):
            parts.append(
                f'<rect x="{ml + pw - 110}" y="{mt + 4 + 14 * si}" width="10" height="10" '
                f'fill="{color}"/><text x="{ml + pw - 96}" y="{mt + 13 + 14 * si}" '
                f'class="legend">{html.escape(label[:16])}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def svg_stacked(rows: Sequence[tuple[str, Sequence[tuple[str, float, str]]]], title: str) -> str:
    """Horizontal 100% stacked bars, one row per ``(label, [(part, value, colour)])``: each
    part's share of its row, with the shares and the row's total written on the bar."""
    w, ml, mr, mt, rh = 420, 128, 58, 28, 30
    h = mt + rh * len(rows) + 34
    pw = w - ml - mr
    out = [f'<svg class="plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           f'aria-label="{html.escape(title)}"><text x="{w / 2}" y="16" class="ptitle">'
           f"{html.escape(title)}</text>"]  # fmt: skip
    legend: dict[str, str] = {}
    for i, (label, parts) in enumerate(rows):
        y = mt + i * rh
        total = sum(v for _, v, _ in parts)
        out.append(f'<text x="{ml - 6}" y="{y + 15}" class="tick end">{html.escape(label)}</text>')
        x0 = float(ml)
        for part, value, color in parts:
            legend.setdefault(part, color)
            bw = value / total * pw if total else 0.0
            if bw > 0:
                share = f"{100 * value / total:.0f}%"
                out.append(f'<rect x="{x0:.1f}" y="{y + 3}" width="{bw:.1f}" height="{rh - 8}" '
                           f'fill="{color}"><title>{html.escape(label)} — {html.escape(part)}: '
                           f"{value:,.0f} ({share})</title></rect>")  # fmt: skip
                if bw > 34:
                    out.append(f'<text x="{x0 + bw / 2:.1f}" y="{y + 15}" class="onbar">'
                               f"{share}</text>")  # fmt: skip
            x0 += bw
        out.append(f'<text x="{ml + pw + 4}" y="{y + 15}" class="tick start">{_nice(total)}</text>')
    lx = ml
    for part, color in legend.items():
        out.append(
            f'<rect x="{lx}" y="{h - 22}" width="10" height="10" fill="{color}"/>'
            f'<text x="{lx + 14}" y="{h - 13}" class="legend">{html.escape(part)}</text>'
        )
        lx += 14 + 7 * len(part) + 14
    out.append("</svg>")
    return "".join(out)


# ---------------------------------------------------------------------- tree data
def _decoder(manifest: dict[str, Any]) -> Any:
    """A function decoding generated ids to text with the run's tokenizer, or ``None`` when
    the tokenizer is not on this machine (the action and observation are shown anyway)."""
    path = (manifest.get("tokenizer") or {}).get("name_or_path")
    if not path or not Path(path).is_dir():
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path)
    except Exception:
        return None
    return lambda ids: tok.decode(list(ids), skip_special_tokens=True)


def tree_data(run: Run, max_tasks: int = TREE_TASKS) -> dict[str, Any]:
    """The trees of the first ``max_tasks`` tasks as compact JSON for the tree view.

    A node is ``[id, parent, value, reward, ended, training, generated tokens, prompt tokens,
    cached tokens, action, thought, observation, error]``."""
    decode = _decoder(run.manifest)
    template = (run.manifest.get("config") or {}).get("template") or {}
    tidy = tidy_observation if template.get("tidy", True) else (lambda text: text)
    task_ids = sorted(run.task_ids, key=_natural)[:max_tasks]
    wanted = set(task_ids)
    cols = ["task_id", "tree_index", "node_id", "parent_id", "value", "reward", "ended",
            "training", "generated_ids", "prompt_tokens", "cached_tokens", "action",
            "observation", "error", "parse_error"]  # fmt: skip
    table = run.nodes_table.select(cols)
    mask = pc.is_in(table["task_id"], value_set=pa.array(sorted(wanted)))
    trees: dict[str, dict[int, list[list[Any]]]] = {t: {} for t in task_ids}
    vmin, vmax = math.inf, -math.inf
    for r in table.filter(mask).to_pylist():
        gen = r["generated_ids"] or []
        thought = decode(gen) if decode and gen else ""
        obs = tidy(r["observation"] or "")
        if len(obs) > OBS_CHARS:
            obs = obs[:OBS_CHARS] + f"… [{len(obs) - OBS_CHARS} more characters]"
        if r["value"] is not None:
            vmin, vmax = min(vmin, r["value"]), max(vmax, r["value"])
        err = r["error"] or r["parse_error"] or ""
        trees[r["task_id"]].setdefault(r["tree_index"], []).append([
            r["node_id"], r["parent_id"], r["value"], r["reward"], r["ended"], r["training"],
            len(gen), r["prompt_tokens"], r["cached_tokens"], r["action"], thought, obs, err,
        ])  # fmt: skip
    tasks = [
        {
            "id": t,
            "trees": [{"index": i, "nodes": sorted(ns)} for i, ns in sorted(trees[t].items())],
        }
        for t in task_ids
    ]
    if vmin > vmax:
        vmin, vmax = 0.0, 1.0
    return {"tasks": tasks, "vmin": vmin, "vmax": vmax, "total_tasks": len(run.task_ids)}


def _natural(text: str) -> list[Any]:
    """Sort key that puts ``task-9`` before ``task-10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


# ---------------------------------------------------------------------- HTML
CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2430;
background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header .sub{opacity:.75;font-size:13px}main{padding:16px 24px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:14px 16px;
margin-bottom:16px}h2{font-size:16px;margin:0 0 10px}
table.summary{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.summary td,table.summary th{padding:3px 12px;border-bottom:1px solid #eef0f3;
text-align:right}table.summary td:first-child,table.summary th:first-child{text-align:left}
.runs{display:grid;grid-template-columns:repeat(var(--n),minmax(0,1fr));gap:16px}
.treebox{overflow:auto;max-height:560px;border:1px solid #eef0f3;border-radius:6px;
background:#fcfcfd}
svg.tree .edge{stroke:#9aa3b2;stroke-width:1.4;fill:none}
svg.tree .node{stroke:#2b3340;stroke-width:.8;cursor:pointer}
svg.tree .node.branch{stroke:#111;stroke-width:2.4}
svg.tree .node.selected{stroke:#e0218a;stroke-width:3}
svg.tree .node.train{stroke-dasharray:none}svg.tree text{font-size:11px;fill:#5b6472}
.detail{margin-top:10px;border-top:1px solid #eef0f3;padding-top:8px;min-height:80px}
.detail pre{white-space:pre-wrap;background:#f3f5f8;padding:8px;border-radius:6px;
max-height:260px;overflow:auto;margin:4px 0 8px}
.detail .meta{color:#5b6472;font-size:12.5px}.detail code{background:#fff3d6;padding:1px 4px}
.plots{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.plots>div{flex:0 1 auto}.plots>div:last-child{flex:1 1 440px}
svg.plot{background:#fff;border:1px solid #eef0f3;border-radius:6px}
svg .ptitle{font-size:13px;font-weight:600;text-anchor:middle;fill:#1d2430}
svg .tick{font-size:10.5px;fill:#5b6472;text-anchor:middle}svg .tick.end{text-anchor:end}
svg .tick.start{text-anchor:start}svg .onbar{font-size:10.5px;fill:#fff;text-anchor:middle}
svg .xlabel{font-size:11px;fill:#5b6472;text-anchor:middle}svg .legend{font-size:11px;fill:#333}
svg .axis{stroke:#9aa3b2}svg .empty{text-anchor:middle;fill:#999}
.legendbar{display:inline-block;width:120px;height:10px;vertical-align:middle;
background:linear-gradient(90deg,#d73027,#fee08b,#1a9850);border-radius:2px}
select{font:inherit;padding:2px 4px;max-width:100%}.note{color:#5b6472;font-size:12.5px}
.files code{font-size:12.5px}
"""

JS = r"""
(function(){
const COLS=['id','parent','value','reward','ended','training','gen','prompt','cached','action',
'thought','obs','error'];
function colour(v,lo,hi){if(v===null||v===undefined)return '#c4c8cf';
 const t=hi>lo?Math.max(0,Math.min(1,(v-lo)/(hi-lo))):1;
 const stops=[[215,48,39],[254,224,139],[26,152,80]];
 const s=t<.5?0:1,u=t<.5?t*2:(t-.5)*2,a=stops[s],b=stops[s+1];
 return 'rgb('+a.map((x,i)=>Math.round(x+(b[i]-x)*u)).join(',')+')';}
function el(tag,attrs,parent){const e=document.createElementNS('http://www.w3.org/2000/svg',tag);
 for(const k in attrs)e.setAttribute(k,attrs[k]);if(parent)parent.appendChild(e);return e;}
function esc(s){return String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;',
 '"':'&quot;'}[c]));}
function fmt(v){return v===null||v===undefined?'—':(Number.isInteger(v)?v:v.toFixed(3));}
function show(panel,run,task,tree,n){
 const d=panel.querySelector('.detail');const root=n.parent===null;
 let h='<div class="meta"><b>'+esc(task.id)+'</b> · tree '+tree.index+' · node '+n.id+
  (root?' (root: the reset)':'')+' · value '+fmt(n.value)+' · reward '+fmt(n.reward)+
  (n.ended?' · ended: '+esc(n.ended):'')+(n.training?' · training leaf':'')+
  (n.kids>1?' · branch point ('+n.kids+' children)':'')+
  (root?'':' · '+n.gen+' generated tokens · prompt '+n.prompt+' ('+n.cached+' cached)')+'</div>';
 if(!root){if(n.thought)h+='<div>Generated</div><pre>'+esc(n.thought)+'</pre>';
  h+='<div>Action: <code>'+esc(n.action)+'</code></div>';}
 if(n.error)h+='<div class="meta">error: '+esc(n.error)+'</div>';
 h+='<div>Observation</div><pre>'+esc(n.obs)+'</pre>';d.innerHTML=h;}
function draw(panel,run,ti){
 const svg=panel.querySelector('svg.tree');while(svg.firstChild)svg.removeChild(svg.firstChild);
 const task=run.tasks[ti];if(!task){svg.setAttribute('data-nodes','0');return;}
 const DX=30,DY=20,X0=56;let row=0,maxDepth=0,count=0,first=null;panel.circles={};
 const gE=el('g',{},svg),gN=el('g',{},svg);
 for(const tree of task.trees){
  const nodes={};for(const a of tree.nodes){const n={};COLS.forEach((c,i)=>n[c]=a[i]);
   n.children=[];nodes[n.id]=n;}
  let rootN=null;for(const id in nodes){const n=nodes[id];
   if(n.parent===null)rootN=n;else if(nodes[n.parent])nodes[n.parent].children.push(n);}
  if(!rootN)continue;
  for(const id in nodes)nodes[id].children.sort((a,b)=>a.id-b.id);
  const top=row;
  (function place(n,depth){n.depth=depth;maxDepth=Math.max(maxDepth,depth);
   if(!n.children.length){n.row=row++;return;}
   n.children.forEach(c=>place(c,depth+1));n.row=n.children[0].row;})(rootN,0);
  const t=el('text',{x:4,y:top*DY+DY/2+4},gE);t.textContent='tree '+tree.index;
  for(const id in nodes){const n=nodes[id];n.kids=n.children.length;
   const x=X0+n.depth*DX,y=n.row*DY+DY/2;n.x=x;n.y=y;
   for(const c of n.children){const cx=X0+(n.depth+1)*DX,cy=c.row*DY+DY/2;
    el('path',{d:'M'+x+','+y+' V'+cy+' H'+cx,class:'edge'},gE);}}
  for(const id in nodes){const n=nodes[id];const branch=n.kids>1;
   const c=el('circle',{cx:n.x,cy:n.y,r:branch?7.5:(n.parent===null?6.5:5),
    fill:colour(n.value,run.vmin,run.vmax),
    class:'node'+(branch?' branch':'')+(n.training?' train':''),
    'data-node':n.id,'data-tree':tree.index},gN);
   const tt=el('title',{},c);tt.textContent=(n.parent===null?'reset':n.action)+
    ' (value '+fmt(n.value)+')';
   c.addEventListener('click',()=>{svg.querySelectorAll('.selected').forEach(
    s=>s.classList.remove('selected'));c.classList.add('selected');show(panel,run,task,tree,n);});
   if(n.training){el('rect',{x:n.x+7,y:n.y-3,width:6,height:6,fill:'#2b3340'},gN);}
   panel.circles[tree.index+'/'+n.id]=c;count++;if(first===null)first=[c,tree,n];}
  row+=0.6;}
 svg.setAttribute('width',X0+(maxDepth+1)*DX+20);svg.setAttribute('height',row*DY+10);
 svg.setAttribute('data-nodes',String(count));svg.setAttribute('data-task',task.id);
 if(first){first[0].classList.add('selected');show(panel,run,task,first[1],first[2]);}}
const panels=[...document.querySelectorAll('.runpanel')];
const runs=panels.map(p=>JSON.parse(document.getElementById(p.dataset.src).textContent));
panels.forEach((p,i)=>{const sel=p.querySelector('select');
 runs[i].tasks.forEach((t,j)=>{const o=document.createElement('option');o.value=j;
  o.textContent=t.id+' ('+t.trees.reduce((s,tr)=>s+tr.nodes.length,0)+' nodes)';
  sel.appendChild(o);});
 sel.addEventListener('change',()=>{draw(p,runs[i],+sel.value);
  const id=runs[i].tasks[+sel.value].id;
  panels.forEach((q,k)=>{if(k===i)return;const j=runs[k].tasks.findIndex(t=>t.id===id);
   if(j>=0&&q.querySelector('select').value!=String(j)){q.querySelector('select').value=j;
    draw(q,runs[k],j);}});});
 draw(p,runs[i],0);});
// #task=ID&tree=T&node=N opens a task and clicks a node (links into the report; tests).
const want=new URLSearchParams(location.hash.slice(1));
if(want.has('task'))panels.forEach((p,i)=>{
 const j=runs[i].tasks.findIndex(t=>t.id===want.get('task'));if(j<0)return;
 p.querySelector('select').value=j;draw(p,runs[i],j);
 const c=p.circles[(want.get('tree')||'0')+'/'+(want.get('node')||'0')];
 if(c)c.dispatchEvent(new MouseEvent('click',{bubbles:true}));});
document.body.setAttribute('data-ready','1');
})();
"""


def _json_script(obj: Any, element_id: str) -> str:
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    text = text.replace("</", "<\\/").replace("<!--", "<\\!--")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _plots(summaries: Sequence[Summary]) -> str:
    series = [(s.label, COLORS[i % 2], s) for i, s in enumerate(summaries)]
    out = [
        svg_histogram([(lab, c, s.rewards) for lab, c, s in series],
                      "reward distribution (training leaves)", "trajectory return"),
        svg_histogram([(lab, c, s.tokens_per_leaf) for lab, c, s in series],
                      "tokens per leaf", "generated tokens in the trajectory"),
    ]  # fmt: skip
    rows: list[tuple[str, list[tuple[str, float, str]]]] = []
    for lab, _, s in series:
        tag = f"{lab[:12]}: " if len(series) > 1 else ""
        f = s.figures
        rows.append((f"{tag}generated", [("trunk", s.trunk_tokens, "#3b6fb6"),
                                         ("branch", s.branch_tokens, "#8fb3e3")]))  # fmt: skip
        cached = f["prompt tokens"] - f["computed prompt tokens"]
        computed = f["computed prompt tokens"]
        rows.append(
            (f"{tag}prompt", [("cached", cached, "#1a9850"), ("computed", computed, "#f46d43")])
        )
    out.append(svg_stacked(rows, "budget breakdown (tokens)"))
    adv_names = sorted({s.advantage_column for s in summaries if s.advantage_column})
    out.append(
        svg_histogram([(lab, c, s.advantages) for lab, c, s in series],
                      "advantage histogram", " / ".join(adv_names) or "no advantages")
    )  # fmt: skip
    return "".join(out)


def render_html(
    runs: Sequence[Run], summaries: Sequence[Summary], max_tasks: int = TREE_TASKS
) -> str:
    title = "treegym report — " + " vs ".join(html.escape(s.label) for s in summaries)
    heads = "".join(f"<th>{html.escape(s.label)}</th>" for s in summaries)
    if len(summaries) == 2:
        heads += f"<th>{html.escape(summaries[1].label)} / {html.escape(summaries[0].label)}</th>"
    body_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
        for row in summary_rows(summaries)
    )
    panels, scripts = [], []
    for i, (run, s) in enumerate(zip(runs, summaries, strict=True)):
        data = tree_data(run, max_tasks)
        scripts.append(_json_script(data, f"run-data-{i}"))
        note = (
            f'<div class="note">tree view: first {len(data["tasks"])} of {data["total_tasks"]} '
            "tasks (the plots use all)</div>"
            if data["total_tasks"] > len(data["tasks"])
            else ""
        )
        panels.append(
            f'<div class="runpanel" data-src="run-data-{i}" data-run="{html.escape(s.label)}">'
            f"<h2>{html.escape(s.label)}: trees</h2>"
            f'<label>task <select class="task"></select></label>{note}'
            f'<div class="note">colour = node value (mean return below): '
            f'{_nice(data["vmin"])} <span class="legendbar"></span> {_nice(data["vmax"])}; '
            "thick ring = branch point; square = training leaf; click a node to read its turn"
            f'</div><div class="treebox"><svg class="tree" xmlns="http://www.w3.org/2000/svg">'
            f'</svg></div><div class="detail"></div></div>'
        )
    files = "".join(
        f"<li>{html.escape(s.label)}: <code>{html.escape(str(s.path.resolve()))}</code></li>"
        for s in summaries
    )
    sub = " · ".join(
        f"{html.escape(str(s.figures['env']))} · {html.escape(str(s.figures['sampler']))} · "
        f"{html.escape(str(s.figures['policy']))}"
        for s in summaries
    )
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<style>{CSS}</style></head><body><header><h1>{title}</h1>"
        f'<div class="sub">{sub}</div></header><main>'
        f'<section><div class="runs" style="--n:{len(runs)}">{"".join(panels)}</div></section>'
        '<section><div class="plots"><div><h2>summary</h2><table class="summary">'
        f"<tr><th>metric</th>{heads}</tr>{body_rows}</table></div>"
        f'<div><h2>plots</h2><div class="plots">{_plots(summaries)}</div></div></div></section>'
        f'<section class="files"><h2>run folders</h2><ul>{files}</ul>'
        '<div class="note">Load a run with <code>treegym.load_run(RUN)</code>; columns in '
        "README → Export.</div></section></main>"
        f"{''.join(scripts)}<script>{JS}</script></body></html>"
    )


def write_html(
    runs: Sequence[Run],
    path: str | Path,
    labels: Sequence[str] | None = None,
    max_tasks: int = TREE_TASKS,
) -> tuple[Path, list[Summary]]:
    """Write the report of one run (or two, side by side) to ``path``; return it and the
    summaries."""
    labels = list(labels or _labels(runs))
    summaries = [summarize(r, lab) for r, lab in zip(runs, labels, strict=True)]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_html(runs, summaries, max_tasks), encoding="utf-8")
    tmp.replace(path)
    return path, summaries


def _labels(runs: Sequence[Run]) -> list[str]:
    names = [r.path.resolve().name for r in runs]
    if len(set(names)) < len(names):
        names = [f"{n} ({r.manifest.get('run_id')})" for n, r in zip(names, runs, strict=True)]
    return names
