"""Reproduce treegym's embedded default model from a seed (CPU, about 1.5 h on 2 cores).

1. Make the training tasks of the embedded mix (``treegym.policies.embedded``): TextWorld
   tw-cooking / tw-coin_collector / tw-treasure_hunter games and generated ALFWorld tasks of
   all six types, on training seeds only.
2. Play them, recording each episode as ReAct text pieces — exactly what ``ReActTemplate``
   renders at inference, with the template settings of ``template.json``
   (:data:`TEMPLATE_SETTINGS`: the admissible commands are listed, less the navigation and
   look-around ones, ``go to …``, ``examine …``, ``look``, ``inventory``: ALFWorld lists 50+,
   most of them ``go to``/``examine``, which would not fit the context; the model names those
   from what the observations say; ``--hide-admissible unused`` also hides what no expert plan
   uses). TextWorld: the noisy scripted expert (the expert plan with probability 1 − ε, else a
   random admissible command); ``--textworld-expert recipe`` reads the cookbook first and cites
   the recipe (``treegym.policies.recipe_expert``). ALFWorld (default ``detour``, the shipped
   model's): the plan with random detours; ``--alfworld-expert search`` is the searching
   expert (``treegym.policies.search_expert``), which never goes where only the plan knows an
   object is: it searches receptacles that may hold it in random order, so the data teaches a
   search a model can do, and thoughts that say only what the agent can know.
3. Train a byte-level BPE tokenizer (``tokenizers``) with the template's special tokens.
4. Tokenize each piece on its own, as the transcript does at inference, and train a small Llama
   (``transformers.LlamaForCausalLM``) for a fixed number of steps with the loss on generated
   pieces only, saving checkpoints along the way.
5. Choose the checkpoint with the most reward *contrast* on validation tasks (seeds that are
   neither training nor held-out evaluation seeds): the share of tasks whose episodes at T=1
   both win and lose, averaged over the two envs (malformed turns must stay ≤ 3%).
6. Save it (float16 safetensors), the tokenizer, ``template.json`` and ``training.json``.

Usage: ``python scripts/train_embedded_model.py --out data/embedded``; then
``python scripts/eval_embedded_model.py`` measures it on held-out tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from treegym.envs.embedded_mix import (
    ENVS,
    MAX_EPISODE_STEPS,
    TRAIN_SEEDS,
    VALID_SEEDS,
    made_embedded_task,
)
from treegym.policies.react import ReActTemplate
from treegym.policies.recipe_expert import RecipeExpert
from treegym.policies.scripted import RANDOM_THOUGHT, ScriptedPolicy
from treegym.policies.search_expert import SearchExpert
from treegym.policies.tokenizer import train_react_tokenizer

TEMPLATE_SETTINGS = {
    "show_admissible": True,
    "hide_admissible": r"^(go to |examine |look$|inventory$)",
}
"""The shipped model's template settings; ``--hide-admissible`` replaces the pattern."""
HIDE_UNUSED = r"^(go to |examine |look$|inventory$|close |cook |drop |insert |put |eat (?!meal$))"
"""``--hide-admissible unused``: also hides the TextWorld commands no expert plan of the mix uses
(``close``, ``cook``, ``drop``, ``insert``, ``put``, eating an ingredient: measured over 60
training tasks, the plans use only ``go``, ``open``, ``take``, ``prepare meal``, ``eat meal``;
ALFWorld's ``move X to Y`` / ``cool X with Y`` are not matched). A cooking prompt lists 26
commands with the shipped pattern, mostly what the carried ingredients allow, and its episodes
ran into the context guard."""
DETOUR = 0.5
"""``--alfworld-expert detour``: how often the expert searches before going where the plan says."""
SEARCH_EPSILON = 0.1
"""``--alfworld-expert search``: its random-pick rate (the search order is random already)."""


def make_env(env: str, path: Path):
    steps = MAX_EPISODE_STEPS[env]
    if env == "alfworld":
        from treegym.envs.alfworld_env import ALFWorldEnv

        return ALFWorldEnv(task=str(path), max_episode_steps=steps)
    from treegym.envs.textworld_env import TextWorldEnv

    return TextWorldEnv(str(path), max_episode_steps=steps)


SEARCH_THOUGHT = "let me look around"


def detour_turns(chooser: ScriptedPolicy, rng: random.Random):
    """``--alfworld-expert detour`` (the shipped model's data): the noisy expert plan, except
    that when the plan's next step goes somewhere, the expert first visits another receptacle
    with probability :data:`DETOUR` (and opens it when it is closed). Its other thoughts name
    the plan's step, which the observations never justify."""
    last = {"thought": ""}

    def choose(obs: str, info: dict) -> tuple[str, str]:
        admissible, plan = info.get("admissible_commands") or [], info.get("expert_plan") or []
        action = None
        if last["thought"] == SEARCH_THOUGHT and "is closed" in obs:
            target = next((c for c in admissible if c.startswith("open ")), None)
            action = target if target is not None and rng.random() < 0.8 else None
        if action is None and plan and plan[0].startswith("go to ") and rng.random() < DETOUR:
            others = [c for c in admissible if c.startswith("go to ") and c != plan[0]]
            action = rng.choice(others) if others else None
        thought = SEARCH_THOUGHT
        if action is None:
            action, _, thought = chooser.choose(info, rng)
        last["thought"] = thought
        return action, thought

    return choose


def search_turns(rng: random.Random, epsilon: float):
    """``--alfworld-expert search``: :class:`SearchExpert`, or with probability ``epsilon`` a
    random admissible command (the data shows recoveries)."""
    expert, last = SearchExpert(rng), {}

    def choose(obs: str, info: dict) -> tuple[str, str]:
        if last:
            expert.observe(last["action"], obs)
        if rng.random() < epsilon:
            action, thought = rng.choice(info["admissible_commands"]), RANDOM_THOUGHT
        else:
            action, thought = expert.choose(obs, info)
        last["action"] = action
        return action, thought

    return choose


def plan_turns(chooser: ScriptedPolicy, rng: random.Random):
    """``--textworld-expert plan`` (the shipped model's data): a ``choose(obs, info)`` that
    follows the noisy expert plan (which knows the recipe and the room a coin is in)."""
    return lambda _obs, info: chooser.choose(info, rng)[::2]


def recipe_turns(chooser: ScriptedPolicy, rng: random.Random):
    """``--textworld-expert recipe``: the noisy expert plan, with :class:`RecipeExpert`'s
    reading of the cookbook and thoughts that cite the recipe (a no-op without a cookbook)."""
    expert = RecipeExpert()

    def choose(_obs: str, info: dict) -> tuple[str, str]:
        action, _, thought = chooser.choose(info, rng)
        return (action, thought) if thought == RANDOM_THOUGHT else expert.choose(info)

    return choose


TEXTWORLD_EXPERTS = {"plan": plan_turns, "recipe": recipe_turns}


def play_task(job: tuple[str, int, int, float, int, dict]) -> tuple[list, int]:
    """Episodes of one task as ``[(text piece, is_generated)]`` lists, and the expert's wins.
    ``data``: the ``--alfworld-expert``/``--textworld-expert`` names and the template settings."""
    env_name, task_seed, episodes, epsilon, seed, data = job
    task, path = made_embedded_task(env_name, task_seed)
    template = ReActTemplate(tokenizer=None, **data["template"])
    chooser = ScriptedPolicy(template, "expert", epsilon=epsilon, seed=seed)
    rng = random.Random(f"{seed}:{task.spec}")
    env, out, wins = make_env(env_name, path), [], 0
    for _ in range(episodes):
        obs, info = env.reset(seed=rng.randrange(2**31 - 1))
        pieces = [(template.prompt_text(obs, info["admissible_commands"]), 0)]
        if env_name != "alfworld":
            choose = TEXTWORLD_EXPERTS[data["textworld_expert"]](chooser, rng)
        elif data["alfworld_expert"] == "search":
            choose = search_turns(rng, SEARCH_EPSILON)
        else:
            choose = detour_turns(chooser, rng)
        while True:
            action, thought = choose(obs, info)
            pieces.append((ReActTemplate.assistant_text(thought, action), 1))
            obs, _, terminated, truncated, info = env.step(action)
            pieces.append((template.observation_text(obs, info["admissible_commands"]), 0))
            if terminated or truncated:
                wins += bool(info["won"])
                break
        out.append(pieces)
    env.close()
    return out, wins


def collect(tasks: list[tuple[str, int]], episodes: int, epsilon: float, seed: int,
            workers: int, data: dict) -> tuple[list, int]:  # fmt: skip
    """Play ``(env, task seed)`` tasks in ``workers`` processes (``data``: see play_task)."""
    jobs = [(env, s, episodes, epsilon, seed, data) for env, s in tasks]
    out, wins, t0 = [], 0, time.time()
    with ProcessPoolExecutor(workers) as pool:
        for i, (eps, won) in enumerate(pool.map(play_task, jobs, chunksize=4)):
            out += eps
            wins += won
            if (i + 1) % 40 == 0:
                print(f"  {i + 1}/{len(jobs)} tasks played ({time.time() - t0:.0f}s)", flush=True)
    return out, wins


def encode(episodes, tokenizer, template: ReActTemplate, max_len: int) -> list[tuple[list, list]]:
    out = []
    for pieces in episodes:
        ids: list[int] = []
        mask: list[int] = []
        for text, generated in pieces:
            piece = template.encode(text)  # each piece on its own, as the transcript does
            ids += piece
            mask += [generated] * len(piece)
        if len(ids) <= max_len:
            out.append((ids, mask))
    return out


def batches(data, tokens_per_batch: int, rng: random.Random):
    order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
    groups, current, longest = [], [], 0
    for i in order:
        longest = max(longest, len(data[i][0]))
        if current and longest * (len(current) + 1) > tokens_per_batch:
            groups.append(current)
            current, longest = [], len(data[i][0])
        current.append(i)
    if current:
        groups.append(current)
    while True:
        rng.shuffle(groups)
        yield from groups


def collate(data, idx: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(data[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), -100, dtype=torch.long)
    attn = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        seq, mask = data[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        labels[row, : len(seq)] = torch.tensor(
            [t if m else -100 for t, m in zip(seq, mask, strict=True)]
        )
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def save_model(model, tokenizer, settings: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(folder)
    (folder / "template.json").write_text(json.dumps(settings, indent=2) + "\n")


def train(model, data, tokenizer, args, out: Path) -> tuple[list[Path], dict]:
    """Fixed-step AdamW with warmup and cosine decay; checkpoints at ``--checkpoints``."""
    rng = random.Random(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    marks = {round(args.steps * float(f)) for f in args.checkpoints.split(",")}
    saved, losses, seen, t0 = [], [], 0, time.time()
    for step, idx in enumerate(batches(data, args.tokens_per_batch, rng), start=1):
        frac = (step - 1) / args.steps
        lr = args.lr * min(1.0, step / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = collate(data, idx, tokenizer.pad_token_id)
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += int(batch["attention_mask"].sum())
        losses.append(float(loss))
        if step % 25 == 0:
            rate = seen / (time.time() - t0)
            print(f"step {step}/{args.steps} loss {sum(losses[-25:]) / 25:.3f} lr {lr:.2e} "
                  f"{rate:.0f} tok/s {(time.time() - t0) / 60:.1f} min", flush=True)  # fmt: skip
        if step in marks:
            saved.append(out / "checkpoints" / f"step-{step}")
            save_model(model, tokenizer, template_settings(args), saved[-1])
        if step >= args.steps:
            break
    return saved, {
        "steps": args.steps,
        "tokens_seen": seen,
        "train_tokens_per_s": round(seen / (time.time() - t0)),
        "final_loss": round(sum(losses[-25:]) / max(1, len(losses[-25:])), 4),
        "train_minutes": round((time.time() - t0) / 60, 1),
    }


async def validate(folder: Path, n_tasks: int, episodes: int, seed: int) -> dict:
    """Contrast of a checkpoint on validation tasks of both envs (T=1)."""
    from treegym.harness.evaluate import evaluate_mix
    from treegym.policies.hf import HFPolicy

    policy = HFPolicy(folder, seed=seed)
    template = ReActTemplate.for_model(policy.tokenizer, folder)  # its template.json
    out = {}
    for env in ENVS:
        report = await evaluate_mix(policy, template, env, VALID_SEEDS[:n_tasks],
                                    episodes=episodes, seed=seed)  # fmt: skip
        out[env] = report.summary()
    await policy.aclose()
    return out


def contrast_score(summary: dict) -> float:
    """Mean mixed-task share over the envs; a checkpoint with > 3% malformed turns scores 0."""
    if any(s["malformed_turn_rate"] > 0.03 for s in summary.values()):
        return 0.0
    return sum(s["mixed_task_share"] for s in summary.values()) / len(summary)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--out", type=Path, default=Path("data/embedded"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--textworld-tasks", type=int, default=240)
    ap.add_argument("--alfworld-tasks", type=int, default=240)
    ap.add_argument("--episodes-per-task", type=int, default=6)
    ap.add_argument("--epsilon", type=float, default=0.25)
    ap.add_argument("--alfworld-expert", choices=("detour", "search"), default="detour",
                    help="ALFWorld's data: detour (the shipped model's: the plan, with random "
                         "detours) or search (policies/search_expert.py: searches where the "
                         "plan would use what the agent cannot know)")  # fmt: skip
    ap.add_argument(
        "--textworld-expert",
        choices=sorted(TEXTWORLD_EXPERTS),
        default="plan",
        help="TextWorld's data: plan (the shipped model's: the noisy expert plan) or "
        "recipe (policies/recipe_expert.py: cooking reads the cookbook first)",
    )
    ap.add_argument(
        "--hide-admissible",
        choices=("shipped", "unused"),
        default="shipped",
        help="commands left out of the prompt's list: shipped (navigation and "
        "look-around) or unused (also what no expert plan of the mix uses)",
    )
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--tokens-per-batch", type=int, default=16384)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--checkpoints", default="0.33,0.5,0.67,0.83,1.0",
                    help="fractions of --steps at which to save a checkpoint")  # fmt: skip
    ap.add_argument("--valid-tasks", type=int, default=24, help="validation tasks per env")
    ap.add_argument("--valid-episodes", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    return ap.parse_args()


def template_settings(args: argparse.Namespace) -> dict:
    """The template the data is written in, saved as each checkpoint's ``template.json``."""
    hide = {"shipped": TEMPLATE_SETTINGS["hide_admissible"], "unused": HIDE_UNUSED}
    return {**TEMPLATE_SETTINGS, "hide_admissible": hide[args.hide_admissible]}


def prepare_and_train(args: argparse.Namespace, work: Path) -> dict:
    """Data, tokenizer, model, checkpoints under ``work``; the training record."""
    t0 = time.time()
    tasks = [("textworld", s) for s in TRAIN_SEEDS[: args.textworld_tasks]]
    tasks += [("alfworld", s) for s in TRAIN_SEEDS[: args.alfworld_tasks]]
    settings = template_settings(args)
    experts = {"alfworld_expert": args.alfworld_expert, "textworld_expert": args.textworld_expert}
    episodes, wins = collect(tasks, args.episodes_per_task, args.epsilon, args.seed, args.workers,
                             {**experts, "template": settings})  # fmt: skip
    print(f"{len(episodes)} episodes of {len(tasks)} tasks ({time.time() - t0:.0f}s)", flush=True)
    tokenizer = train_react_tokenizer([t for ep in episodes for t, _ in ep], args.vocab_size)
    data = encode(episodes, tokenizer, ReActTemplate(tokenizer, **settings), args.max_len)
    lengths = sorted(len(ids) for ids, _ in data)
    print(f"{len(data)}/{len(episodes)} episodes <= {args.max_len} tokens; median "
          f"{lengths[len(lengths) // 2]}, max {lengths[-1]}; vocab {len(tokenizer)}",
          flush=True)  # fmt: skip
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 32 * 32,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 32,
        num_key_value_heads=args.hidden // 32,
        max_position_embeddings=args.max_len,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)
    checkpoints, trained = train(model, data, tokenizer, args, work)
    return {
        "seed": args.seed,
        "task_mix": "treegym.envs.embedded_mix.embedded_task (textworld + alfworld)",
        "train_seeds": {
            "textworld": [0, args.textworld_tasks],
            "alfworld": [0, args.alfworld_tasks],
        },
        "valid_seeds_from": VALID_SEEDS.start,
        "template": settings,
        "max_episode_steps": MAX_EPISODE_STEPS,
        "episodes": len(episodes),
        "episodes_used": len(data),
        "expert_wins_in_data": wins,
        "epsilon": args.epsilon,
        "parameters": n_params,
        **trained,
        "checkpoints": [c.name for c in checkpoints],
        "data_and_train_minutes": round((time.time() - t0) / 60, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }


def main() -> None:
    """Each stage's result is kept under ``OUT.work`` (training record, each checkpoint's
    validation), so an interrupted run continues where it stopped."""
    args = parse_args()
    torch.manual_seed(args.seed)
    work = args.out.with_name(args.out.name + ".work")
    record_file, valid_file = work / "record.json", work / "validation.json"
    if record_file.is_file():
        record = json.loads(record_file.read_text())
    else:
        record = prepare_and_train(args, work)
        record_file.write_text(json.dumps(record, indent=2) + "\n")
    validation = json.loads(valid_file.read_text()) if valid_file.is_file() else {}
    t0 = time.time()
    for name in record["checkpoints"]:
        if name not in validation:
            result = asyncio.run(validate(work / "checkpoints" / name, args.valid_tasks,
                                          args.valid_episodes, args.seed))  # fmt: skip
            validation[name] = result
            valid_file.write_text(json.dumps(validation, indent=2) + "\n")
        print(f"{name}: {json.dumps(validation[name])}", flush=True)
    best = max(record["checkpoints"], key=lambda c: (contrast_score(validation[c]), c))
    if args.out.exists():
        shutil.rmtree(args.out)
    shutil.copytree(work / "checkpoints" / best, args.out)
    record.update(
        checkpoint=best, validation=validation, validation_minutes=round((time.time() - t0) / 60, 1)
    )
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "validation"}, indent=2))


if __name__ == "__main__":
    main()
