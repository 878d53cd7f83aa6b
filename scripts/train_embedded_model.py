"""Reproduce treegym's embedded default model from a seed (CPU, well under an hour).

1. Make tw-cooking games offline (train seeds, and held-out seeds for evaluation).
2. Play them with the noisy scripted expert, recording each episode as ReAct text pieces —
   the same pieces ``ReActTemplate`` renders at inference.
3. Train a byte-level BPE tokenizer (``tokenizers``) on those texts, with the template's
   special tokens.
4. Tokenize each piece on its own, exactly as the transcript does at inference, and train a
   small Llama (``transformers.LlamaForCausalLM``) with the loss on generated pieces only.
5. Save weights (float16 safetensors), tokenizer and a ``training.json`` record to ``--out``.

Usage: ``python scripts/train_embedded_model.py --out data/embedded --minutes 35``.
Evaluate with ``python scripts/eval_embedded_model.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from treegym.envs.textworld_env import TextWorldEnv
from treegym.policies.embedded import EVAL_SEEDS, TRAIN_SEEDS
from treegym.policies.embedded import embedded_game_spec as game_spec
from treegym.policies.react import ReActTemplate
from treegym.policies.scripted import ScriptedPolicy
from treegym.policies.tokenizer import train_react_tokenizer


def collect(
    games: list[str], episodes: int, epsilon: float, seed: int
) -> tuple[list[list[tuple[str, int]]], int]:
    """Episodes as ``[(text piece, is_generated)]`` lists played by the noisy expert, and wins."""
    text_template = ReActTemplate(tokenizer=None)
    chooser = ScriptedPolicy(text_template, "expert", epsilon=epsilon, seed=seed)
    rng = random.Random(seed)
    out, wins = [], 0
    for game in games:
        env = TextWorldEnv(game, max_episode_steps=20)
        for _ in range(episodes):
            obs, info = env.reset(seed=rng.randrange(2**31 - 1))
            pieces = [(text_template.prompt_text(obs, info["admissible_commands"]), 0)]
            while True:
                action, _, thought = chooser.choose(info, rng)
                pieces.append((ReActTemplate.assistant_text(thought, action), 1))
                obs, _, terminated, truncated, info = env.step(action)
                pieces.append((text_template.observation_text(obs, info["admissible_commands"]), 0))
                if terminated or truncated:
                    wins += bool(info["won"])
                    break
            out.append(pieces)
        env.close()
    return out, wins


def encode(episodes, tokenizer, max_len: int) -> list[tuple[list[int], list[int]]]:
    template = ReActTemplate(tokenizer)
    out = []
    for pieces in episodes:
        ids: list[int] = []
        mask: list[int] = []
        for text, generated in pieces:
            piece = template.encode(text)
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


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", type=Path, default=Path("data/embedded"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-games", type=int, default=96)
    ap.add_argument("--episodes-per-game", type=int, default=8)
    ap.add_argument("--epsilon", type=float, default=0.25)
    ap.add_argument("--vocab-size", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=1536)
    ap.add_argument("--tokens-per-batch", type=int, default=12288)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--minutes", type=float, default=35.0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    t0 = time.time()

    from treegym.envs.textworld_games import make_game

    games = [str(make_game(game_spec(s))) for s in TRAIN_SEEDS[: args.train_games]]
    print(f"{len(games)} games made in {time.time() - t0:.0f}s", flush=True)
    episodes, wins = collect(games, args.episodes_per_game, args.epsilon, args.seed)
    print(f"{len(episodes)} episodes collected ({time.time() - t0:.0f}s)", flush=True)
    tokenizer = train_react_tokenizer([t for ep in episodes for t, _ in ep], args.vocab_size)
    data = encode(episodes, tokenizer, args.max_len)
    lengths = sorted(len(ids) for ids, _ in data)
    print(
        f"{len(data)}/{len(episodes)} episodes <= {args.max_len} tokens; "
        f"median {lengths[len(lengths) // 2]}, "
        f"max {lengths[-1]}; vocab {len(tokenizer)}",
        flush=True,
    )

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3 // 32 * 32,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 32,
        num_key_value_heads=args.hidden // 32,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    budget_s = args.minutes * 60
    warmup = 50
    t_train = time.time()
    step, seen_tokens, losses = 0, 0, []
    for idx in batches(data, args.tokens_per_batch, rng):
        elapsed = time.time() - t_train
        if elapsed > budget_s:
            break
        frac = elapsed / budget_s
        lr = (
            args.lr
            * min(1.0, (step + 1) / warmup)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        batch = collate(data, idx, tokenizer.pad_token_id)
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen_tokens += int(batch["attention_mask"].sum())
        losses.append(float(loss))
        step += 1
        if step % 25 == 0:
            rate = seen_tokens / (time.time() - t_train)
            print(
                f"step {step} loss {sum(losses[-25:]) / 25:.3f} lr {lr:.2e} {rate:.0f} tok/s "
                f"{elapsed / 60:.1f} min",
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    record = {
        "seed": args.seed,
        "task_family": "tw-cooking:recipe=1,take=1,go∈{1,6},open∈{true,false}",
        "train_game_seeds": [0, args.train_games],
        "eval_game_seeds_from": EVAL_SEEDS.start,
        "episodes": len(episodes),
        "episodes_used": len(data),
        "expert_wins_in_data": wins,
        "epsilon": args.epsilon,
        "parameters": n_params,
        "steps": step,
        "tokens_seen": seen_tokens,
        "train_tokens_per_s": round(seen_tokens / (time.time() - t_train)),
        "final_loss": round(sum(losses[-25:]) / max(1, len(losses[-25:])), 4),
        "minutes": round((time.time() - t0) / 60, 1),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
