"""SDAR training: multi-turn GRPO plus gated on-policy self-distillation, on Hugging Face + accelerate.

    python train.py                                    # embedded tiny agent, built-in ALFWorld, CPU
    accelerate launch train.py --config configs/alfworld.yaml --model Qwen/Qwen2.5-0.5B-Instruct

One iteration: rollout (rollout.py) -> group advantages (grpo.py) -> old, reference and teacher
log-probs, once, before any update -> mini-batch updates of the SDAR objective (update.py) ->
evaluation, logging and checkpoints. Each process rolls out its own whole groups.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import torch

from config import ConfigError, TrainConfig, env_kwargs_of, parse_config, validate


def task_seed(seed: int, iteration: int, group: int) -> int:
    """The environment seed of one group: a pure function, so a resumed run draws the same tasks."""
    return (seed * 1_000_003 + iteration * 10_007 + group) % (2**31 - 1)


def load_model(cfg: TrainConfig, path: str, device):
    """Tokenizer and float32 policy through from_pretrained (bf16 compute comes from autocast on GPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=cfg.trust_remote_code)
    except OSError as error:
        raise ConfigError(f"model: cannot load {path!r} ({str(error).splitlines()[0]}); give a local folder "
                          f"or a hub id reachable from this machine") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora_r > 0:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    return tokenizer, model.to(device)


def make_skill_fn(cfg: TrainConfig, rng: random.Random, bandit):
    """skill_fn(env, info, prompt_text="") -> (skill text, category), remembering the files used (for the
    UCB bandit). `prompt_text`, the student's message, is read only by the released WebShop rule."""
    from envs.skills import SkillBank

    bank, used = SkillBank(cfg.env_name, cfg.skills_dir), {}

    def skill_fn(env, info, prompt_text=""):
        text, names, category = bank.for_task(info, prompt_text, cfg.skill_retrieval, rng, bandit)
        used[id(env)] = (category, names)
        return text, category

    return skill_fn, bank.files, used


def rollout_config(cfg: TrainConfig, evaluation: bool = False):
    from rollout import RolloutConfig
    return RolloutConfig(
        history_length=cfg.history_length, max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens,
        max_prompt_length=cfg.max_prompt_length, invalid_penalty=cfg.invalid_penalty,
        temperature=cfg.eval_temperature if evaluation else cfg.temperature,
        split=cfg.eval_split if evaluation else "train",
        show_skills_to_student=cfg.eval_with_skills if evaluation else cfg.show_skills_to_student,
        generation_batch_size=cfg.generation_batch_size,
        cache_implementation="static" if cfg.fast_decode else None,
        pad_to_multiple_of=64 if cfg.fast_decode else None)


class Logger:
    """metrics.jsonl always (main process), accelerate trackers when asked, and a PNG of the curves."""

    def __init__(self, cfg: TrainConfig, accelerator, start_iteration: int):
        self.cfg, self.accelerator = cfg, accelerator
        self.path = os.path.join(cfg.output_dir, "metrics.jsonl")
        if accelerator.is_main_process and os.path.exists(self.path):
            rows = [json.loads(line) for line in open(self.path) if line.strip()]
            with open(self.path, "w") as handle:          # drop rows past the checkpoint we resume from
                handle.writelines(json.dumps(r) + "\n" for r in rows if r["iteration"] <= start_iteration)

    def log(self, iteration: int, metrics: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
        if self.cfg.report_to != "none":
            self.accelerator.log(metrics, step=iteration)

    def plot(self) -> None:
        if self.accelerator.is_main_process and self.cfg.plot:
            from plots import plot_curves
            plot_curves(self.path, os.path.join(self.cfg.output_dir, "curves.png"))


def reduce_mean(accelerator, metrics: dict) -> dict:
    """Average each numeric metric over processes (every process reports the same keys)."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], device=accelerator.device)
    values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist()))


def run_eval(model, tokenizer, accelerator, cfg, eval_envs, panel, skill_fn, iteration: int) -> dict:
    """Success on the fixed panel, split over processes; sums are reduced so uneven shares weigh right.

    Sampling is seeded by (seed, iteration) only, so runs that differ just in their updates (the
    methods of compare.py) score identical weights identically; training reseeds every iteration.
    """
    from accelerate.utils import set_seed

    from rollout import evaluate

    set_seed(task_seed(cfg.seed, iteration, 40_000 + accelerator.process_index), device_specific=False)

    with accelerator.autocast():
        metrics = evaluate(accelerator.unwrap_model(model), tokenizer, eval_envs, panel, rollout_config(cfg, True),
                           skill_fn)
    n = len(panel)
    keys = ["success", "score", "return", "episode_length", "invalid_rate"]
    totals = torch.tensor([metrics[k] * n for k in keys] + [n], device=accelerator.device, dtype=torch.float64)
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
        metrics = {}                            # per-type shares differ between processes: not reported
    out = {f"eval/{k}": (totals[i] / totals[-1].clamp(min=1)).item() for i, k in enumerate(keys)}
    out.update({f"eval/{k}": v for k, v in metrics.items() if k.startswith("success/")})
    return out


def train(cfg: TrainConfig) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from checkpoint import (clean_partial, delete_run, earlier_run, latest_checkpoint, load_optimizer_state,
                            load_trainer_state, save_checkpoint)
    from envs import make_env
    from envs.skills import UCBSkillBandit
    from grpo import group_advantages
    from rollout import rollout
    from update import score_tokens, update_policy

    use_cuda = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision="bf16" if use_cuda else "no",
                              log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=cfg.output_dir)
    validate(cfg, accelerator.num_processes)
    world, rank = accelerator.num_processes, accelerator.process_index
    previous = [] if cfg.resume else earlier_run(cfg.output_dir)
    if previous and not cfg.overwrite:           # refused before anything is written: the old run stays whole
        raise ConfigError(f"output_dir: {cfg.output_dir} holds an earlier run ({', '.join(previous)}); pass "
                          "--resume true to continue it, --overwrite true to replace it, or another --output_dir")
    accelerator.wait_for_everyone()              # every process has looked before the main one deletes
    if previous and accelerator.is_main_process:
        delete_run(cfg.output_dir)
    os.makedirs(cfg.output_dir, exist_ok=True)
    resume_from = latest_checkpoint(cfg.output_dir) if cfg.resume else None
    if cfg.resume and accelerator.is_main_process:
        clean_partial(cfg.output_dir)
    state = load_trainer_state(resume_from) if resume_from else {"iteration": 0}
    accelerator.print(json.dumps(vars(cfg), indent=1))
    if accelerator.is_main_process:
        with open(os.path.join(cfg.output_dir, "config.json"), "w") as handle:
            json.dump(vars(cfg), handle, indent=1)

    env_kwargs = env_kwargs_of(cfg)
    local_tasks = cfg.tasks_per_iter // world
    envs = [make_env(cfg.env_name, cfg.env_backend, **env_kwargs) for _ in range(local_tasks * cfg.group_size)]
    panel = list(range(cfg.eval_tasks))[rank::world]
    eval_envs = [make_env(cfg.env_name, cfg.env_backend, **env_kwargs) for _ in panel]

    model_path = cfg.model
    if cfg.model == "embedded":
        from warmstart import embedded_model_path
        with accelerator.main_process_first():
            model_path = embedded_model_path(cfg.env_name)
    tokenizer, model = load_model(cfg, os.path.join(resume_from, "model") if resume_from else model_path,
                                  accelerator.device)
    reference = None
    if cfg.kl_coef > 0 and cfg.lora_r == 0:       # the frozen initial policy (with LoRA: adapters off)
        _, reference = load_model(cfg, model_path, accelerator.device)
        reference.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_ratio * cfg.iterations))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: min(1.0, (it + 1) / warmup))
    model, optimizer = accelerator.prepare(model, optimizer)
    if resume_from:
        load_optimizer_state(resume_from, optimizer, scheduler)
    if cfg.report_to != "none":
        accelerator.init_trackers("sdar", config=vars(cfg))

    bandit = None
    skill_rng = random.Random(cfg.seed * 7919 + rank)
    skill_fn, skill_files, used_skills = make_skill_fn(cfg, skill_rng, None)
    if cfg.skill_retrieval == "ucb":
        bandit = UCBSkillBandit(skill_files)
        bandit.load_state_dict(state.get("bandit", {"counts": {}, "totals": {}}))
        skill_fn, _, used_skills = make_skill_fn(cfg, skill_rng, bandit)
    start = state["iteration"]
    logger = Logger(cfg, accelerator, start)
    best = state.get("best", {"eval/success": -1.0, "iteration": -1})
    history = state.get("eval_history", [])
    if start == 0 and cfg.eval_every > 0:
        history.append({"iteration": 0, **run_eval(model, tokenizer, accelerator, cfg, eval_envs, panel, skill_fn, 0)})
        logger.log(0, history[-1])
        accelerator.print(f"iteration 0: eval/success {history[-1]['eval/success']:.3f}")

    from tqdm import tqdm
    progress = tqdm(range(start, cfg.iterations), disable=not accelerator.is_main_process, desc="sdar",
                    initial=start, total=cfg.iterations)
    for iteration in progress:
        t0 = time.perf_counter()
        set_seed(task_seed(cfg.seed, iteration, 10_000 + rank), device_specific=False)
        skill_rng.seed(task_seed(cfg.seed, iteration, 30_000 + rank))
        groups = [rank * local_tasks + j for j in range(local_tasks)]
        seeds = [task_seed(cfg.seed, iteration, g) for g in groups for _ in range(cfg.group_size)]
        group_ids = [g for g in groups for _ in range(cfg.group_size)]
        with accelerator.autocast():
            samples, roll = rollout(accelerator.unwrap_model(model), tokenizer, envs, seeds, group_ids,
                                    rollout_config(cfg), skill_fn)
        t_rollout = time.perf_counter()
        if bandit is not None:
            for i, env in enumerate(envs):
                category, names = used_skills[id(env)]
                won = max((s.score for s in samples if s.traj_id == i), default=0.0) > 0
                bandit.update(category, names[0], float(won))
        scores = torch.tensor([s.score for s in samples], dtype=torch.float64)
        advantages = group_advantages(scores, torch.tensor([s.group_id for s in samples]),
                                      torch.tensor([s.traj_id for s in samples]), cfg.norm_by_std,
                                      cross_steps=cfg.cross_steps).float()
        unwrapped = accelerator.unwrap_model(model)
        timings = {}
        with accelerator.autocast():
            t = time.perf_counter()
            old_logp = score_tokens(unwrapped, tokenizer, samples, cfg)
            timings["perf/old_s"] = time.perf_counter() - t
            t = time.perf_counter()
            if cfg.kl_coef == 0:
                ref_logp = old_logp
            elif reference is not None:
                ref_logp = score_tokens(reference, tokenizer, samples, cfg)
            else:
                with unwrapped.disable_adapter():
                    ref_logp = score_tokens(unwrapped, tokenizer, samples, cfg)
            timings["perf/ref_s"] = time.perf_counter() - t
            t = time.perf_counter()
            needs_teacher = cfg.sdar_coef > 0 or cfg.skill_sd_coef > 0 or cfg.rlsd_lam > 0
            teacher_logp = score_tokens(unwrapped, tokenizer, samples, cfg, teacher=True) if needs_teacher else old_logp
            timings["perf/teacher_s"] = time.perf_counter() - t
        t = time.perf_counter()
        model.train()
        tensors = {"advantages": list(advantages), "old_logp": old_logp, "ref_logp": ref_logp, "teacher_logp": teacher_logp}
        generator = torch.Generator().manual_seed(task_seed(cfg.seed, iteration, 20_000 + rank))
        losses = update_policy(model, tokenizer, optimizer, accelerator, samples, tensors, cfg, generator, state)
        scheduler.step()
        timings["perf/update_s"] = time.perf_counter() - t
        metrics = {"train/reward": roll["return"], "train/success": roll["success"], "train/score": roll["score"],
                   "train/invalid_rate": roll["invalid_rate"], "train/episode_length": roll["episode_length"],
                   "train/step_samples": len(samples), "perf/rollout_s": t_rollout - t0,
                   "perf/rollout_tok_s": roll["tokens_per_s"], **timings, **losses,
                   **{f"train/{k}": v for k, v in roll.items() if k.startswith("success/")}}
        per_type = {k: metrics.pop(k) for k in list(metrics) if k.startswith("train/success/")}
        metrics = reduce_mean(accelerator, metrics)
        if world == 1:                          # task types differ between processes: logged on one process only
            metrics.update(per_type)
        metrics["perf/iter_s"] = time.perf_counter() - t0
        done = iteration + 1
        evaluate_now = (cfg.eval_every > 0 and done % cfg.eval_every == 0) or done == cfg.iterations
        if evaluate_now:
            metrics.update(run_eval(model, tokenizer, accelerator, cfg, eval_envs, panel, skill_fn, done))
            history.append({"iteration": done, **{k: v for k, v in metrics.items() if k.startswith("eval/")}})
            if metrics["eval/success"] > best["eval/success"]:
                best = {"eval/success": metrics["eval/success"], "iteration": done}
        logger.log(done, metrics)
        if evaluate_now:                        # after the row is written, so the curve includes it
            logger.plot()
        progress.set_postfix(reward=f"{metrics['train/reward']:.2f}", success=f"{metrics['train/success']:.2f}",
                             eval=f"{history[-1]['eval/success']:.2f}" if history else "-")
        if done % cfg.save_every == 0 or done == cfg.iterations:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                trainer_state = {"best": best, "eval_history": history, "skipped_steps": state.get("skipped_steps", 0),
                                 "bandit": bandit.state_dict() if bandit else None}
                save_checkpoint(cfg.output_dir, done, accelerator.unwrap_model(model), tokenizer, optimizer,
                                scheduler, trainer_state, cfg.keep_checkpoints)
            accelerator.wait_for_everyone()
    final = os.path.join(cfg.output_dir, "final")
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(final, safe_serialization=True)
        tokenizer.save_pretrained(final)
        logger.plot()
    summary = {"final": history[-1] if history else {}, "best": best}
    accelerator.print(json.dumps(summary))
    if cfg.report_to != "none":
        accelerator.end_training()
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run training. Bad input (flags, YAML, values, model path, checkpoint files, an earlier run in
    output_dir, a real benchmark that is not set up) ends in one `error:`
    line on stderr and exit code 2, before anything heavy is loaded where possible; a run stopped by
    non-finite updates or an unreachable retriever ends in one `error:` line and exit code 1."""
    import contextlib
    import io

    import yaml

    from checkpoint import CheckpointError
    from envs.base import EnvSetupError
    from envs.search.retriever import RetrieverError

    try:
        parser_output = io.StringIO()
        try:
            with contextlib.redirect_stderr(parser_output):     # argparse prints its whole usage first
                cfg = parse_config(argv)
        except SystemExit as stop:
            if not stop.code:                                   # --help
                raise
            lines = parser_output.getvalue().strip().splitlines() or [f"bad arguments (exit {stop.code})"]
            raise ConfigError(lines[-1].split("error: ", 1)[-1].rstrip(".") + "; see train.py --help") from None
        except ConfigError:
            raise
        except (ValueError, yaml.YAMLError) as error:           # flags that no field takes, broken YAML
            raise ConfigError(f"bad flags or config file: {' '.join(str(error).split())}; "
                              f"see train.py --help") from None
        sys.stderr.write(parser_output.getvalue())
        validate(cfg)                           # fails before anything heavy is loaded
        train(cfg)
    except (ConfigError, CheckpointError, EnvSetupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FloatingPointError, RetrieverError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
