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
import sys
import time

import torch

from config import ConfigError, TrainConfig, env_kwargs_of, parse_config, preset_note, validate


def task_seed(seed: int, iteration: int, group: int) -> int:
    """The environment seed of one group: a pure function, so a resumed run draws the same tasks."""
    return (seed * 1_000_003 + iteration * 10_007 + group) % (2**31 - 1)


def load_model(cfg: TrainConfig, path: str, device, adapter: str | None = None):
    """Tokenizer and float32 policy through from_pretrained (bf16 compute comes from autocast on GPU).
    With `lora_r > 0` the policy gets fresh LoRA adapters, or the trained ones saved in `adapter`."""
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
        from peft import LoraConfig, PeftModel, get_peft_model
        if adapter:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"))
    return tokenizer, model.to(device)


def load_models(cfg: TrainConfig, resume_from: str | None, accelerator):
    """(tokenizer, policy, reference): the policy from the checkpoint when resuming (under LoRA the
    checkpoint holds the adapters: the base model, then them), the reference (the frozen initial model
    for the KL term) only when `kl_coef > 0`, and None under LoRA, where the initial model is the policy
    with its adapters switched off."""
    model_path = cfg.model
    if cfg.model == "embedded":
        from embedded import embedded_model_path
        with accelerator.main_process_first():
            model_path = embedded_model_path(cfg.env_name)
    saved = os.path.join(resume_from, "model") if resume_from else None
    if cfg.lora_r > 0:
        tokenizer, model = load_model(cfg, model_path, accelerator.device, adapter=saved)
    else:
        tokenizer, model = load_model(cfg, saved or model_path, accelerator.device)
    reference = None
    if cfg.kl_coef > 0 and cfg.lora_r == 0:
        _, reference = load_model(cfg, model_path, accelerator.device)
        reference.eval().requires_grad_(False)
    return tokenizer, model, reference


def make_optimizer(cfg: TrainConfig, model):
    """AdamW on the trainable parameters and a linear warm-up over the first `warmup_ratio` of iterations."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_ratio * cfg.iterations))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: min(1.0, (it + 1) / warmup))
    return optimizer, scheduler


def make_envs(cfg: TrainConfig, world: int, rank: int):
    """This process's training envs (its share of the tasks, G copies each), eval envs and panel indices."""
    from envs import make_env

    env_kwargs = env_kwargs_of(cfg)
    envs = [make_env(cfg.env_name, cfg.env_backend, **env_kwargs)
            for _ in range(cfg.tasks_per_iter // world * cfg.group_size)]
    panel = list(range(cfg.eval_tasks))[rank::world]
    eval_envs = [make_env(cfg.env_name, cfg.env_backend, **env_kwargs) for _ in panel or [0]]
    return envs, eval_envs, panel


def rollout_config(cfg: TrainConfig, evaluation: bool = False, teacher: bool = False):
    """The rollout's settings for training, evaluation, or (`teacher`) evaluation of the SDAR teacher: the
    same weights prompted exactly as the teacher is in the scoring pass (skills per `teacher_context`)."""
    from rollout import RolloutConfig
    show_skills = cfg.eval_with_skills if evaluation else cfg.show_skills_to_student
    return RolloutConfig(
        history_length=cfg.history_length, max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens,
        max_prompt_length=cfg.max_prompt_length, invalid_penalty=cfg.invalid_penalty,
        temperature=cfg.eval_temperature if evaluation else cfg.temperature,
        split=cfg.eval_split if evaluation else "train", show_skills_to_student=show_skills and not teacher,
        teacher_context=cfg.teacher_context if teacher else None,
        stop_at_action=cfg.stop_at_action,
        generation_batch_size=cfg.generation_batch_size,
        cache_implementation="static" if cfg.fast_decode else None,
        pad_to_multiple_of=64 if cfg.fast_decode else None)


def run_eval(model, tokenizer, accelerator, cfg, eval_envs, panel, skills, iteration: int,
             teacher: bool = False, prefix: str = "eval/") -> dict:
    """Success on the fixed panel (this process's share), split over processes; sums are reduced so uneven
    shares weigh right. `teacher`: the SDAR teacher (the same weights, prompted with the skills exactly as
    in the teacher's scoring pass), logged as eval/teacher_*.

    Sampling is seeded by (seed, iteration) only, so runs that differ just in their updates (the
    methods of compare.py) score identical weights identically; training reseeds every iteration.
    """
    from accelerate.utils import set_seed

    from rollout import evaluate

    set_seed(task_seed(cfg.seed, iteration, 40_000 + accelerator.process_index), device_specific=False)
    config = rollout_config(cfg, evaluation=True, teacher=teacher)
    with accelerator.autocast():
        label = f"{prefix.rstrip('/')} {'teacher' if teacher else 'student'} @ {iteration}"
        metrics = evaluate(accelerator.unwrap_model(model), tokenizer, eval_envs, panel, config, skills,
                           progress=label if accelerator.is_main_process else None)
    n = len(panel)
    keys = ["success", "score", "return", "episode_length", "invalid_rate"]
    totals = torch.tensor([metrics[k] * n for k in keys] + [n], device=accelerator.device, dtype=torch.float64)
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
        metrics = {}                            # per-type shares differ between processes: not reported
    prefix = "eval/teacher_" if teacher else prefix
    out = {f"{prefix}{k}": (totals[i] / totals[-1].clamp(min=1)).item() for i, k in enumerate(keys)}
    out.update({f"{prefix}{k}": v for k, v in metrics.items() if k.startswith("success/")})
    return out


def evaluate_start(model, tokenizer, accelerator, cfg, eval_envs, panel, skills) -> dict:
    """Row 0: the student on the panel and, with `eval_teacher`, the SDAR teacher acting on the same panel
    (the same weights, prompted as in the teacher's scoring pass): how much the skills are worth."""
    row = run_eval(model, tokenizer, accelerator, cfg, eval_envs, panel, skills, 0)
    if cfg.eval_teacher:
        row.update(run_eval(model, tokenizer, accelerator, cfg, eval_envs, panel, skills, 0, teacher=True))
    teacher = f", teacher (skills in its prompt) {row['eval/teacher_success']:.1%}" if cfg.eval_teacher else ""
    accelerator.print(f"start: student {row['eval/success']:.1%}{teacher} on the {cfg.eval_tasks}-task panel")
    return row


def final_panel(cfg, eval_envs, world: int, rank: int) -> list[int]:
    """This process's share of the `final_eval_tasks` first tasks of the eval split (-1: all of them)."""
    total = eval_envs[0].num_tasks(cfg.eval_split) if cfg.final_eval_tasks < 0 else cfg.final_eval_tasks
    return list(range(total))[rank::world]


def gate_metrics(accelerator, tokenizer, samples, experience, cfg) -> tuple[dict, dict | None]:
    """The gap gate on this iteration's tokens, action tokens vs the rest (metrics.gate_statistics)."""
    from metrics import gate_statistics
    from rollout import STOP_TAGS, action_token_mask

    if cfg.sdar_coef == 0 or cfg.gate != "gap":
        return {}, None
    T = experience.response_mask.shape[1]
    action_mask = torch.zeros(experience.response_mask.shape, dtype=torch.bool)    # (N, T)
    for row, sample in enumerate(samples):
        mask = action_token_mask(tokenizer, sample.response_ids, STOP_TAGS[cfg.env_name])
        action_mask[row, :len(mask)] = torch.tensor(mask[:T], dtype=torch.bool)
    return gate_statistics(accelerator, experience.old_logp, experience.teacher_logp, experience.response_mask,
                           action_mask.to(experience.response_mask.device), cfg.beta)


def train(cfg: TrainConfig) -> dict:
    """Set up, then per iteration: 1 rollout, 2 advantages, 3 scoring passes, 4 update, 5 evaluate/log/save."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from checkpoint import (check_output_dir, checkpoint_path, load_optimizer_state, load_trainer_state,
                            save_final, save_on_all, start_output_dir)
    from envs.skills import SkillPicker
    from grpo import group_advantages
    from metrics import Logger, iteration_metrics
    from rollout import rollout
    from update import build_experience, update_policy

    use_cuda = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision="bf16" if use_cuda else "no",
                              log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=cfg.output_dir)
    validate(cfg, accelerator.num_processes)
    world, rank = accelerator.num_processes, accelerator.process_index
    resume_from = check_output_dir(cfg)          # refuses an earlier run's folder before anything is built
    state = load_trainer_state(resume_from) if resume_from else {"iteration": 0}
    accelerator.print(json.dumps(vars(cfg), indent=1))
    accelerator.print(preset_note(cfg))
    if resume_from:
        accelerator.print(f"resuming from {resume_from}: iteration {state['iteration']} of {cfg.iterations} done")
    envs, eval_envs, panel = make_envs(cfg, world, rank)
    set_seed(cfg.seed, device_specific=False)    # fresh LoRA adapters are drawn at random: the same every run
    tokenizer, model, reference = load_models(cfg, resume_from, accelerator)
    optimizer, scheduler = make_optimizer(cfg, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    if resume_from:
        load_optimizer_state(resume_from, optimizer, scheduler)
    start_output_dir(cfg, accelerator)           # setup worked: only now is anything written
    skills = SkillPicker(cfg.env_name, cfg.skill_retrieval, cfg.seed * 7919 + rank, state.get("bandit"), cfg.skills_dir)
    logger = Logger(cfg, accelerator, state)
    policy = accelerator.unwrap_model(model)
    if state["iteration"] == 0 and cfg.eval_every > 0:
        logger.log(0, evaluate_start(model, tokenizer, accelerator, cfg, eval_envs, panel, skills))

    def save(done: int) -> None:
        trainer_state = {**logger.state_dict(), "skipped_steps": state.get("skipped_steps", 0),
                         "bandit": skills.state_dict()}
        save_on_all(accelerator, cfg.output_dir, done, model, tokenizer, optimizer, scheduler, trainer_state,
                    cfg.keep_checkpoints)

    local_tasks = cfg.tasks_per_iter // world
    progress = tqdm(range(state["iteration"], cfg.iterations), disable=not accelerator.is_main_process,
                    desc="sdar", initial=state["iteration"], total=cfg.iterations)
    for iteration in progress:
        start = time.perf_counter()
        set_seed(task_seed(cfg.seed, iteration, 10_000 + rank), device_specific=False)
        skills.reseed(task_seed(cfg.seed, iteration, 30_000 + rank))

        # 1. Rollout: G copies of each of this process's tasks (same seed per group), one step sample per turn.
        groups = [rank * local_tasks + j for j in range(local_tasks)]
        seeds = [task_seed(cfg.seed, iteration, g) for g in groups for _ in range(cfg.group_size)]
        group_ids = [g for g in groups for _ in range(cfg.group_size)]
        try:
            with accelerator.autocast():
                samples, roll = rollout(policy, tokenizer, envs, seeds, group_ids, rollout_config(cfg), skills)
        except (Exception, KeyboardInterrupt):   # e.g. the retriever is gone: keep the iterations already done
            if world == 1 and iteration > 0 and not os.path.isdir(checkpoint_path(cfg.output_dir, iteration)):
                save(iteration)
            raise
        skills.record(envs, samples)
        rollout_seconds = time.perf_counter() - start

        # 2. Advantages: each step sample's score (its episode's return minus its penalty), normalised in its group.
        scores = torch.tensor([s.score for s in samples], dtype=torch.float64)
        advantages = group_advantages(scores, torch.tensor([s.group_id for s in samples]),
                                      torch.tensor([s.traj_id for s in samples]), cfg.norm_by_std,
                                      cross_steps=cfg.cross_steps).float()

        # 3. Scoring passes, once, with the rollout weights: old, reference and teacher log-probs.
        with accelerator.autocast():
            experience, timings = build_experience(policy, reference, tokenizer, samples, advantages, cfg)

        # 4. Update: shuffled mini-batches of the SDAR objective, one optimizer step each.
        update_start = time.perf_counter()
        model.train()
        generator = torch.Generator().manual_seed(task_seed(cfg.seed, iteration, 20_000 + rank))
        losses = update_policy(model, optimizer, accelerator, experience, cfg, generator, state, iteration)
        scheduler.step()
        timings["perf/update_s"] = time.perf_counter() - update_start

        # 5. Evaluate on the fixed panel, log, save.
        done = iteration + 1
        gate_stats, histograms = gate_metrics(accelerator, tokenizer, samples, experience, cfg)
        metrics = iteration_metrics(accelerator, roll, len(samples), {"perf/rollout_s": rollout_seconds, **timings,
                                                                      **losses, **gate_stats})
        metrics["perf/iter_s"] = time.perf_counter() - start
        if (cfg.eval_every > 0 and done % cfg.eval_every == 0) or done == cfg.iterations:
            metrics.update(run_eval(model, tokenizer, accelerator, cfg, eval_envs, panel, skills, done))
        if done == cfg.iterations and cfg.final_eval_tasks:
            metrics.update(run_eval(model, tokenizer, accelerator, cfg, eval_envs,
                                    final_panel(cfg, eval_envs, world, rank), skills, done, prefix="final/"))
        logger.log(done, metrics, histograms)
        progress.set_postfix(reward=f"{metrics['train/reward']:.2f}", success=f"{metrics['train/success']:.2f}")
        if done % cfg.save_every == 0 or done == cfg.iterations:
            save(done)
    if accelerator.is_main_process:
        save_final(cfg.output_dir, policy, tokenizer)
    summary = logger.finish()
    accelerator.print(json.dumps(summary))
    return summary


def dry_run(cfg: TrainConfig) -> None:
    """Print the resolved config and build one environment (which checks a real benchmark's data folder,
    checkout or retriever), without loading a model or writing anything."""
    from envs import make_env

    print(json.dumps(vars(cfg), indent=1))
    print(preset_note(cfg))
    make_env(cfg.env_name, cfg.env_backend, **env_kwargs_of(cfg))
    print(f"dry run: the config is valid and the {cfg.env_backend} {cfg.env_name} environment is set up")


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
        if cfg.dry_run:
            dry_run(cfg)
        else:
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
