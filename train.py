"""SDAR training: multi-turn GRPO plus gated on-policy self-distillation, on Hugging Face + accelerate.

    python train.py                                    # embedded tiny agent, built-in ALFWorld, CPU
    accelerate launch train.py --config configs/alfworld.yaml --model Qwen/Qwen2.5-0.5B-Instruct

One iteration, in the five numbered stages of `train()`, each with its file: 1 rollout (rollout.py),
2 group advantages (grpo.py), 3 old, reference and teacher log-probs, once, before any update
(experience.py), 4 mini-batch updates of the SDAR objective (update.py, objective.py, gate.py),
5 evaluation, diagnostics (diagnostics.py), logging and checkpoints. Each process rolls out its own
whole groups.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import DistributedType, set_seed
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from checkpoint import (CheckpointError, check_output_dir, checkpoint_path, load_optimizer_state, load_trainer_state,
                        save_final, save_on_all, start_output_dir)
from cli import parse_config
from config import ConfigError, TrainConfig, env_kwargs_of, preset_note, validate
from diagnostics import action_masks, advantage_diagnostics, gap_statistics, measure_term_gradients
from embedded import embedded_model_path
from envs import make_env
from envs.base import EnvSetupError
from envs.search.retriever import RetrieverError
from envs.skills import SkillPicker
from experience import build_experience
from grpo import group_advantages
from metrics import Logger, iteration_metrics, phase_peak_gib
from rollout import RolloutConfig, evaluate, rollout
from sharded import full_optimizer_state, full_state_dict, is_sharded, load_full_optimizer_state, whole_weights
from update import update_policy

# Seed streams: every random draw of a run is seeded by task_seed(seed, iteration, STREAM + rank), a pure
# function, so a resumed run repeats exactly and no stream's draws shift another's. Task seeds use the
# group index itself (below 10_000).
SAMPLING, MINIBATCHES, SKILLS, EVALUATION, DIAGNOSTICS = 10_000, 20_000, 30_000, 40_000, 50_000


def task_seed(seed: int, iteration: int, group: int) -> int:
    """The environment seed of one group: a pure function, so a resumed run draws the same tasks."""
    return (seed * 1_000_003 + iteration * 10_007 + group) % (2**31 - 1)


def load_model(cfg: TrainConfig, path: str, device, adapter: str | None = None):
    """Tokenizer and float32 policy through from_pretrained (bf16 compute comes from autocast: `mixed_precision`).
    With `lora_r > 0` the policy gets fresh LoRA adapters, or the trained ones saved in `adapter`."""
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
        from peft import LoraConfig, PeftModel, get_peft_model   # optional: only LoRA runs need peft
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
    """AdamW on the trainable parameters and a linear warm-up over the first W = `warmup_ratio` x iterations:
    lr (s + 1) / W at step s (from 0), or, under `--parity released`, verl's s / W (lr 0 at the first step)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    warmup, first = int(cfg.warmup_ratio * cfg.iterations), 0 if cfg.parity == "released" else 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda it: min(1.0, (it + first) / warmup) if warmup else 1.0)
    return optimizer, scheduler


def make_envs(cfg: TrainConfig, world: int, rank: int):
    """This process's training envs (its share of the tasks, G copies each), eval envs and panel indices."""
    env_kwargs = env_kwargs_of(cfg)
    envs = [make_env(cfg.env_name, cfg.env_backend, **env_kwargs)
            for _ in range(cfg.tasks_per_iter // world * cfg.group_size)]
    panel = list(range(cfg.eval_tasks))[rank::world]
    eval_envs = [make_env(cfg.env_name, cfg.env_backend, **env_kwargs) for _ in panel or [0]]
    return envs, eval_envs, panel


def rollout_config(cfg: TrainConfig, evaluation: bool = False, teacher: bool = False):
    """The rollout's settings for training, evaluation, or (`teacher`) evaluation of the SDAR teacher: the
    same weights prompted exactly as the teacher is in the scoring pass (skills per `teacher_context`)."""
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
    methods of tools/compare.py) score identical weights identically; training reseeds every iteration.
    """
    set_seed(task_seed(cfg.seed, iteration, EVALUATION + accelerator.process_index), device_specific=False)
    config = rollout_config(cfg, evaluation=True, teacher=teacher)
    with accelerator.autocast(), whole_weights(model, accelerator):
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


@dataclass
class Run:
    """What `setup` builds and the loop uses: the accelerator, the models, the optimizer, the envs, the
    skill picker, the logger and the trainer state (iteration, skipped steps) that checkpoints carry."""
    cfg: TrainConfig
    accelerator: Accelerator
    tokenizer: object
    model: torch.nn.Module                  # wrapped by accelerate (DDP on several processes; FSDP2: sharded)
    reference: torch.nn.Module | None       # frozen initial model (None: no KL term, or LoRA)
    optimizer: torch.optim.Optimizer
    scheduler: object
    envs: list                              # this process's training envs, G per task
    eval_envs: list
    panel: list[int]                        # this process's share of the evaluation panel
    skills: SkillPicker
    logger: Logger
    state: dict = field(default_factory=dict)

    @property
    def policy(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)


def setup(cfg: TrainConfig) -> Run:
    """Validate, refuse an earlier run's folder, build the envs and models, load a checkpoint to resume
    from; only once all that worked is anything written to output_dir."""
    use_cuda = torch.cuda.is_available()
    precision = ("bf16" if use_cuda else "no") if cfg.mixed_precision == "auto" else cfg.mixed_precision
    accelerator = Accelerator(cpu=not use_cuda, mixed_precision=precision,
                              log_with=None if cfg.report_to == "none" else cfg.report_to, project_dir=cfg.output_dir)
    validate(cfg, accelerator.num_processes)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ConfigError("DeepSpeed configs are not supported by train.py: update.py accumulates micro-batches "
                          "itself, and accelerate's DeepSpeed backward steps the engine after every backward (and "
                          "prepare wants a dataloader batch size); use configs/accelerate/fsdp.yaml to shard the model")
    rank = accelerator.process_index
    resume_from = check_output_dir(cfg)          # refuses an earlier run's folder before anything is built
    state = load_trainer_state(resume_from) if resume_from else {"iteration": 0}
    accelerator.print(json.dumps(vars(cfg), indent=1))
    accelerator.print(preset_note(cfg))
    if resume_from:
        accelerator.print(f"resuming from {resume_from}: iteration {state['iteration']} of {cfg.iterations} done")
    envs, eval_envs, panel = make_envs(cfg, accelerator.num_processes, rank)
    set_seed(cfg.seed, device_specific=False)    # fresh LoRA adapters are drawn at random: the same every run
    tokenizer, model, reference = load_models(cfg, resume_from, accelerator)
    optimizer, scheduler = make_optimizer(cfg, model)
    model, optimizer = accelerator.prepare(model, optimizer)
    if resume_from:
        load_optimizer_state(resume_from, optimizer, scheduler,
                             partial(load_full_optimizer_state, model, optimizer) if is_sharded(accelerator) else None)
    start_output_dir(cfg, accelerator)           # setup worked: only now is anything written
    skills = SkillPicker(cfg.env_name, cfg.skill_retrieval, cfg.seed * 7919 + rank, state.get("bandit"), cfg.skills_dir)
    return Run(cfg, accelerator, tokenizer, model, reference, optimizer, scheduler, envs, eval_envs, panel, skills,
               Logger(cfg, accelerator, state), state)


def save(run: Run, done: int) -> None:
    """A complete checkpoint after `done` iterations (weights, optimizer, scheduler, trainer state)."""
    trainer_state = {**run.logger.state_dict(), "skipped_steps": run.state.get("skipped_steps", 0),
                     "bandit": run.skills.state_dict()}
    save_on_all(run.accelerator, run.cfg.output_dir, done, run.model, run.tokenizer, run.optimizer, run.scheduler,
                trainer_state, run.cfg.keep_checkpoints, full_state_dict(run.accelerator, run.model),
                full_optimizer_state(run.accelerator, run.model, run.optimizer))


def diagnostics(run: Run, samples, experience, advantages: torch.Tensor, iteration: int) -> tuple[dict, dict | None]:
    """Is the distillation term doing anything (diagnostics.py)? GRPO's signal every iteration; the gap at
    the rollout weights when a gap-gated term is on; each term's gradient every `diagnostics_every` (not
    with sharded weights: autograd.grad would see the shards, not the weights the forward used)."""
    cfg = run.cfg
    metrics = advantage_diagnostics(torch.tensor([s.episode_return for s in samples]), advantages,
                                    torch.tensor([s.group_id for s in samples]), torch.tensor([s.traj_id for s in samples]))
    histograms = None
    if cfg.sdar_coef > 0 and cfg.gate in ("gap", "gap_centred"):
        T = experience.response_mask.shape[1]
        action = action_masks(run.tokenizer, samples, cfg.env_name, T).to(experience.response_mask.device)  # (N, T)
        won = torch.tensor([s.won for s in samples], device=experience.response_mask.device)               # (N,)
        gap_metrics, histograms = gap_statistics(run.accelerator, experience.old_logp, experience.teacher_logp,
                                                 experience.response_mask, action, won, experience.advantages, cfg.beta)
        metrics.update(gap_metrics)
    if cfg.diagnostics_every > 0 and iteration % cfg.diagnostics_every == 0 and not is_sharded(run.accelerator):
        generator = torch.Generator().manual_seed(task_seed(cfg.seed, iteration, DIAGNOSTICS + run.accelerator.process_index))
        with run.accelerator.autocast():
            metrics.update(measure_term_gradients(run.policy, experience, cfg, generator, iteration))
    return metrics, histograms


def train(cfg: TrainConfig) -> dict:
    """Set up, then per iteration: 1 rollout, 2 advantages, 3 scoring passes, 4 update, 5 evaluate/log/save."""
    run = setup(cfg)
    accelerator, policy, rank = run.accelerator, run.policy, run.accelerator.process_index
    if run.state["iteration"] == 0 and cfg.eval_every > 0:
        run.logger.log(0, evaluate_start(run.model, run.tokenizer, accelerator, cfg, run.eval_envs, run.panel, run.skills))
    local_tasks = cfg.tasks_per_iter // accelerator.num_processes
    progress = tqdm(range(run.state["iteration"], cfg.iterations), disable=not accelerator.is_main_process,
                    desc="sdar", initial=run.state["iteration"], total=cfg.iterations)
    for iteration in progress:
        start, _ = time.perf_counter(), phase_peak_gib(accelerator.device)    # a new peak-memory window
        set_seed(task_seed(cfg.seed, iteration, SAMPLING + rank), device_specific=False)
        run.skills.reseed(task_seed(cfg.seed, iteration, SKILLS + rank))

        # 1. Rollout: G copies of each of this process's tasks (same seed per group), one step sample per turn.
        groups = [rank * local_tasks + j for j in range(local_tasks)]
        seeds = [task_seed(cfg.seed, iteration, g) for g in groups for _ in range(cfg.group_size)]
        group_ids = [g for g in groups for _ in range(cfg.group_size)]
        try:
            with accelerator.autocast(), whole_weights(run.model, accelerator):
                samples, roll = rollout(policy, run.tokenizer, run.envs, seeds, group_ids, rollout_config(cfg), run.skills)
        except (Exception, KeyboardInterrupt):   # e.g. the retriever is gone: keep the iterations already done
            if accelerator.num_processes == 1 and iteration > 0 and not os.path.isdir(checkpoint_path(cfg.output_dir, iteration)):
                save(run, iteration)
            raise
        run.skills.record(run.envs, samples)
        phases = {"perf/rollout_s": time.perf_counter() - start, "perf/peak_gib/rollout": phase_peak_gib(accelerator.device)}

        # 2. Advantages: each step sample's score (its episode's return minus its penalty), normalised in its group.
        scores = torch.tensor([s.score for s in samples], dtype=torch.float64)                     # (N,)
        advantages = group_advantages(scores, torch.tensor([s.group_id for s in samples]),
                                      torch.tensor([s.traj_id for s in samples]), cfg.norm_by_std,
                                      cross_steps=cfg.cross_steps).float()                         # (N,)

        # 3. Scoring passes, once, with the rollout weights: old, reference and teacher log-probs.
        with accelerator.autocast(), whole_weights(run.model, accelerator):
            experience, timings = build_experience(policy, run.reference, run.tokenizer, samples, advantages, cfg)
        phases.update(timings)
        phases["perf/peak_gib/scoring"] = phase_peak_gib(accelerator.device)
        found, histograms = diagnostics(run, samples, experience, advantages, iteration)   # at the rollout weights

        # 4. Update: mini-batches of the SDAR objective (shuffled; in order under --parity released), one step each.
        update_start = time.perf_counter()
        run.model.train()
        generator = torch.Generator().manual_seed(task_seed(cfg.seed, iteration, MINIBATCHES + rank))
        losses = update_policy(run.model, run.optimizer, accelerator, experience, cfg, generator, run.state, iteration)
        run.scheduler.step()
        phases.update({"perf/update_s": time.perf_counter() - update_start,
                       "perf/peak_gib/update": phase_peak_gib(accelerator.device)})

        # 5. Evaluate on the fixed panel, log, save.
        done = iteration + 1
        metrics = iteration_metrics(accelerator, roll, len(samples), {**phases, **losses, **found})
        metrics["perf/iter_s"] = time.perf_counter() - start
        if (cfg.eval_every > 0 and done % cfg.eval_every == 0) or done == cfg.iterations:
            metrics.update(run_eval(run.model, run.tokenizer, accelerator, cfg, run.eval_envs, run.panel, run.skills, done))
        if done == cfg.iterations and cfg.final_eval_tasks:
            metrics.update(run_eval(run.model, run.tokenizer, accelerator, cfg, run.eval_envs,
                                    final_panel(cfg, run.eval_envs, accelerator.num_processes, rank), run.skills, done,
                                    prefix="final/"))
        run.logger.log(done, metrics, histograms)
        progress.set_postfix(reward=f"{metrics['train/reward']:.2f}", success=f"{metrics['train/success']:.2f}")
        if done % cfg.save_every == 0 or done == cfg.iterations:
            save(run, done)
    state_dict = full_state_dict(accelerator, run.model)      # every process: a collective under FSDP
    if accelerator.is_main_process:
        save_final(cfg.output_dir, policy, run.tokenizer, state_dict)
    summary = run.logger.finish()
    accelerator.print(json.dumps(summary))
    return summary


def dry_run(cfg: TrainConfig) -> None:
    """Print the resolved config and build one environment (which checks a real benchmark's data folder,
    checkout or retriever), without loading a model or writing anything."""
    print(json.dumps(vars(cfg), indent=1))
    print(preset_note(cfg))
    make_env(cfg.env_name, cfg.env_backend, **env_kwargs_of(cfg))
    print(f"dry run: the config is valid and the {cfg.env_backend} {cfg.env_name} environment is set up")


def main(argv: list[str] | None = None) -> int:
    """Run training. Bad input (flags, YAML, values, model path, checkpoint files, an earlier run in
    output_dir, a real benchmark that is not set up) ends in one `error:`
    line on stderr and exit code 2, before anything heavy is loaded where possible; a run stopped by
    non-finite updates or an unreachable retriever ends in one `error:` line and exit code 1."""
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
