"""The training configuration: one dataclass, the paper's method presets, and validation.

`python train.py --help` lists every field with its docstring. The dataclass defaults are the paper's
(SPEC §4). Values come from, in increasing priority: those defaults, the CPU-sized `EMBEDDED_DEFAULTS`
(only when the model is the embedded tiny agent), a YAML file (`--config`) and command-line flags;
then fields still unset (None) come from the env's defaults (`ENV_DEFAULTS`) and the method preset
(`METHODS`).
Validation runs before any model or environment loads, and every error names the field and the fix.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import inspect
import json
import math
import os
import sys
import textwrap
import types
import typing
from dataclasses import dataclass

from envs import BACKENDS
from envs.skills import RETRIEVAL_MODES
from gate import GATES
from grpo import AGG_MODES
from opsd import DIVERGENCES
from prompts import TEACHER_CONTEXTS

class ConfigError(ValueError):
    """A configuration problem, reported in one line with exit code 2."""


@dataclass
class TrainConfig:
    config: str | None = None
    """YAML file with any of these fields; command-line flags override it."""
    output_dir: str = "runs/default"
    """Where metrics.jsonl, config.json, curves.png, checkpoints/ and final/ go."""
    seed: int = 0
    """Seeds the task draws, the sampling and the mini-batch shuffles (runs are reproducible on CPU)."""
    resume: bool = False
    """Continue from the latest complete checkpoint in output_dir/checkpoints."""
    overwrite: bool = False
    """Start afresh in an output_dir that holds an earlier run, deleting it (without this or resume: refused)."""

    model: str = "embedded"
    """A local path or hub id for from_pretrained, or 'embedded' for the built-in warm-started tiny agent."""
    trust_remote_code: bool = False
    """Allow a checkpoint to run its own Python code. Off unless you trust the checkpoint."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    lora_r: int = 0
    """LoRA rank (0 = full fine-tuning). With LoRA the reference is the base (adapters off)."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""

    env_name: str = "alfworld"
    """alfworld | webshop | search."""
    env_backend: str = "builtin"
    """builtin (offline engine, runs anywhere) | real (the benchmark's own package or server)."""
    env_kwargs: str = "{}"
    """JSON object of keyword arguments for the env class (room size, data path, retriever url, prompt switches)."""
    prompt_template: str | None = None
    """A template file for the student's prompt (None = envs/<env>/prompt.txt; README 'Your own prompt template')."""
    tasks_per_iter: int = 16
    """Tasks (groups) per iteration over all processes (paper: 16; Search-QA 128)."""
    group_size: int = 8
    """Rollouts per task (G) for the group-relative advantage."""
    history_length: int | None = None
    """(observation, action) pairs in the prompt; None = the env's default (2 / 2 / 4)."""
    max_turns: int | None = None
    """Turn limit; None = the env's (50 / 15 / 4)."""
    max_prompt_length: int = 2048
    """Prompt tokens (left-truncated)."""
    max_new_tokens: int = 512
    """Response tokens per turn."""
    stop_at_action: bool | None = None
    """Stop sampling at the first closed action tag and train on the response up to it (project, the
    default), or sample to EOS or the token budget and train on all of it (False; the released code)."""
    temperature: float = 1.0
    """Sampling temperature of training rollouts (top-p 1.0, no top-k)."""
    invalid_penalty: float | None = None
    """Score subtracted from an invalid step; None = 0.1 (Search-QA 0.01)."""
    generation_batch_size: int | None = None
    """Rows per generate call (None = all active environments at once)."""
    fast_decode: bool = False
    """Static KV cache + torch.compile for generate (GPU; bucketed shapes, warm-up cost reported)."""

    parity: str = "project"
    """project (this project's defaults) | released (every switch the released code's way: see README
    'Differences from the released code'). Only fills what you leave unset."""
    method: str = "sdar"
    """sdar | grpo | grpo_opsd | opsd | skill_grpo | skill_sd | rlsd: sets the unset coefficients below."""
    pg_coef: float | None = None
    """Weight of the GRPO policy loss."""
    kl_coef: float | None = None
    """Weight of the k3 KL to the initial model (0.01; Search-QA 0.001). 0 skips the reference model."""
    entropy_coef: float | None = None
    """Weight of the entropy bonus (0.001, on in every released run)."""
    sdar_coef: float | None = None
    """Weight of the gated self-distillation loss (0.01)."""
    beta: float | None = None
    """Gate sharpness: g = sigmoid(beta * gap) (5; 0 = naive GRPO+OPSD)."""
    skill_sd_coef: float | None = None
    """Weight of the Skill-SD term (0.001 for method skill_sd)."""
    rlsd_lam: float | None = None
    """RLSD advantage reweighting strength (0.5 for method rlsd; 0 = off)."""
    rlsd_decay_iterations: int = 100
    """RLSD's strength decays linearly to 0 over this many iterations (released code: 100; 0 = constant)."""
    skill_sd_rho_grad: bool = True
    """Skill-SD: the gradient flows through the importance weight rho (released code); False detaches it."""
    gate: str = "gap"
    """gap (the paper) | entropy | soft_or | gap_centred (beyond the paper: weight g - 1/2, the same expected
    gradient with less variance; beta 0 is then exactly GRPO; see gate.centred_gap_gate)."""
    divergence: str = "sampled"
    """sampled (the released code) | reverse_kl | forward_kl | jsd (full-vocabulary, teacher recomputed live)."""
    teacher_context: str = "prefix"
    """prefix (released code: skills before the templated prompt) | in_prompt (paper: inside the user message)."""
    teacher_prefix_cache: bool = True
    """Encode the skill prefix that teacher prompts share once per group (KV cache), not per sample: same numbers."""
    skill_retrieval: str | None = None
    """keyword (the default) | full | random | ucb | released (ALFWorld by task type, WebShop by keywords,
    Search by data source; what --parity released uses)."""
    skills_dir: str | None = None
    """A skill folder such as the released SkillBank (<env>/general.md + one file per category); None = skills/."""
    show_skills_to_student: bool | None = None
    """Put the skills into the student's training prompt (Skill-GRPO)."""
    eval_with_skills: bool = False
    """Show the skills at evaluation too (the Skill-GRPO* row)."""
    eval_teacher: bool = True
    """Before training, also evaluate the teacher (same weights, its prompt with the skills): eval/teacher_* in row 0."""

    iterations: int = 150
    """Training iterations (rollout + update)."""
    lr: float = 1e-6
    """AdamW learning rate."""
    warmup_ratio: float = 0.0
    """Fraction of iterations with a linear warm-up (Search-QA: 0.1)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    ppo_epochs: int = 1
    """Passes over the iteration's samples."""
    mini_batch_size: int = 256
    """Step samples per optimizer step over all processes (WebShop: 64)."""
    micro_batch_size: int = 8
    """Step samples per forward/backward on one process (gradient accumulation inside a mini-batch)."""
    clip_low: float = 0.2
    """PPO clip below 1."""
    clip_high: float = 0.2
    """PPO clip above 1."""
    dual_clip: float | None = 3.0
    """Dual-clip bound for negative advantages (None = off)."""
    loss_agg: str | None = None
    """token-mean (the default: over the whole mini-batch) | micro-token-mean (released code: per micro-batch)
    | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm; see grpo.aggregate."""
    norm_by_std: bool = True
    """Divide advantages by the group std (False = Dr.GRPO)."""
    cross_steps: bool = True
    """Group statistics over every step sample (True, released code) or one value per trajectory."""
    logprob_chunk_size: int = 128
    """Response positions per output-head chunk (memory bound of the log-prob computation)."""
    max_bad_steps: int = 3
    """Consecutive non-finite losses or gradients before the run stops with an error."""
    diagnostics_every: int = 5
    """Measure each objective term's gradient norm and the PG-SDAR cosine (grad/*) every N iterations, on
    one micro-batch (an extra forward and one backward per term; 0 = never). The other diagnostics are free."""

    eval_every: int = 5
    """Evaluate every N iterations (and before training and at the end); 0 = only at the end."""
    eval_tasks: int = 128
    """Size of the fixed evaluation panel (task indices 0..N-1 of the eval split)."""
    eval_split: str | None = None
    """None = valid_seen (ALFWorld) or test (WebShop, Search-QA)."""
    final_eval_tasks: int | None = None
    """After training, a last evaluation on this many tasks of the eval split (-1: all of it, as the released
    Search-QA code does greedily; 0: none), logged as final/* in the last row. None = 0 (-1 under
    --parity released for search)."""
    eval_temperature: float | None = None
    """None = 0.4 (ALFWorld, WebShop) or greedy 0 (Search-QA)."""
    save_every: int = 25
    """Checkpoint every N iterations (and at the end)."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept on disk."""
    report_to: str = "none"
    """none | tensorboard | wandb (through accelerate's trackers; metrics.jsonl is always written)."""
    plot: bool = True
    """Write curves.png next to metrics.jsonl (needs matplotlib)."""
    dry_run: bool = False
    """Print the resolved config, check it and the env's setup (data folder, retriever), then exit: no model loads."""


def _attach_field_docs(cls):
    """Copy each field's docstring into its argparse help, so the source and --help say the same."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant):
            docs[node.target.id] = following.value.value
    for f in dataclasses.fields(cls):
        f.metadata = types.MappingProxyType({"help": docs.get(f.name, "")})
    return cls


_attach_field_docs(TrainConfig)

ENV_DEFAULTS = {
    "alfworld": dict(history_length=2, invalid_penalty=0.1, eval_split="valid_seen", eval_temperature=0.4),
    "webshop": dict(history_length=2, invalid_penalty=0.1, eval_split="test", eval_temperature=0.4),
    "search": dict(history_length=4, invalid_penalty=0.01, eval_split="test", eval_temperature=0.0),
}
KL_DEFAULT = {"alfworld": 0.01, "webshop": 0.01, "search": 0.001}

# The paper's table rows (SPEC §1). Coefficients left unset are filled from the method's preset.
BASE = dict(pg_coef=1.0, entropy_coef=0.001, sdar_coef=0.0, beta=5.0, skill_sd_coef=0.0, rlsd_lam=0.0,
            show_skills_to_student=False)
METHODS = {
    "sdar": dict(sdar_coef=0.01, beta=5.0),
    "grpo": dict(),
    "grpo_opsd": dict(sdar_coef=0.01, beta=0.0),
    "opsd": dict(pg_coef=0.0, sdar_coef=0.01, beta=5.0),
    "skill_grpo": dict(show_skills_to_student=True),
    "skill_sd": dict(skill_sd_coef=0.001),
    "rlsd": dict(rlsd_lam=0.5),
}
# The switches of `parity` (README 'Differences from the released code'). Config fields left unset and
# env kwargs not given are filled from the chosen column.
PARITY = {
    "project": dict(stop_at_action=True, loss_agg="token-mean", skill_retrieval="keyword"),
    "released": dict(stop_at_action=False, loss_agg="micro-token-mean", skill_retrieval="released"),
}
PARITY_ENV_KWARGS = {
    "project": {},
    "released": {"clip_observations": False, "action_parse": "released"},
}
PARITY_ENV_KWARGS_SEARCH = {"released": {"last_turn_hint": False}}
# Per-env switches with a non-None default: applied unless the user set the field (flag or YAML key).
# Released `ppo_micro_batch_size_per_gpu`: 32 (ALFWorld), 16 (Search-QA), 8 (WebShop).
PARITY_PER_ENV = {"released": {"alfworld": dict(micro_batch_size=32), "search": dict(micro_batch_size=16),
                               "webshop": dict(micro_batch_size=8)}}


CHOICES = {
    "env_backend": BACKENDS, "gate": GATES, "divergence": DIVERGENCES, "teacher_context": TEACHER_CONTEXTS,
    "skill_retrieval": RETRIEVAL_MODES, "loss_agg": AGG_MODES, "report_to": ("none", "tensorboard", "wandb"),
    "method": tuple(METHODS), "parity": tuple(PARITY),
}
# `python train.py` on the embedded tiny agent (assets/embedded-alfworld): the same algorithm, sized
# for a 2-core CPU (about 3 minutes): small rooms of 5-7 receptacles, the two shortest task types, an
# 8-step budget (so searching the right place first matters), objects at their usual place 90 % of
# the time (`prior_strength`, what the skills state), one history step, short responses, fewer and
# smaller batches, and a larger lr than the paper's 1e-6 because the model has under a million
# parameters. warmstart.py trains the agent on these same env settings. Evaluation samples at the
# paper's temperature 0.4 on a fixed panel of 128 tasks, as in the paper.
EMBEDDED_DEFAULTS = dict(
    output_dir="runs/embedded",
    env_kwargs=json.dumps({"room_size": "small", "num_receptacles": [5, 7], "num_distractors": [0, 1],
                           "task_types": ["pick_and_place_simple", "look_at_obj_in_light"],
                           "prior_strength": 0.9, "max_steps": 8}),
    history_length=1, max_turns=8, max_new_tokens=24, tasks_per_iter=4, group_size=8, lr=3e-4,
    mini_batch_size=64, micro_batch_size=32, iterations=16, eval_every=4, eval_tasks=128, eval_temperature=0.4,
    save_every=4,
)
REAL_ENV_PACKAGES = {"alfworld": "alfworld"}  # WebShop is a checkout, checked by RealWebShop.check_kwargs


def resolve(cfg: TrainConfig, given: set[str] | None = None) -> TrainConfig:
    """Fill every None that has an env, parity or method default (explicit values always win), and the
    per-env parity values of fields not in `given`, the fields the user set (None: those that differ
    from the dataclass default)."""
    for name, value in PARITY.get(cfg.parity, {}).items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    if given is None:
        given = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default}
    for name, value in PARITY_PER_ENV.get(cfg.parity, {}).get(cfg.env_name, {}).items():
        if name not in given:
            setattr(cfg, name, value)
    if cfg.final_eval_tasks is None:
        cfg.final_eval_tasks = -1 if cfg.parity == "released" and cfg.env_name == "search" else 0
    released_env = {**PARITY_ENV_KWARGS.get(cfg.parity, {}),
                    **(PARITY_ENV_KWARGS_SEARCH.get(cfg.parity, {}) if cfg.env_name == "search" else {})}
    if released_env:
        try:
            given = json.loads(cfg.env_kwargs)
        except ValueError:
            given = None                            # validate reports it
        if isinstance(given, dict):
            cfg.env_kwargs = json.dumps({**released_env, **given})
    if cfg.env_name in ENV_DEFAULTS:
        for name, value in ENV_DEFAULTS[cfg.env_name].items():
            if getattr(cfg, name) is None:
                setattr(cfg, name, value)
        if cfg.kl_coef is None:
            cfg.kl_coef = KL_DEFAULT[cfg.env_name]
    preset = {**BASE, **METHODS.get(cfg.method, {})}
    for name, value in preset.items():
        if getattr(cfg, name) is None:
            setattr(cfg, name, value)
    return cfg


def validate(cfg: TrainConfig, world_size: int = 1) -> None:
    """Raise ConfigError on the first problem; cheap (nothing heavy is imported or loaded)."""
    from envs import ENV_NAMES

    def fail(field_name, problem, fix):
        raise ConfigError(f"{field_name}: {problem}; {fix}")

    if cfg.env_name not in ENV_NAMES:
        fail("env_name", f"{cfg.env_name!r} is unknown", f"choose one of {', '.join(ENV_NAMES)}")
    for name, choices in CHOICES.items():
        if getattr(cfg, name) not in choices:
            fail(name, f"{getattr(cfg, name)!r} is unknown", f"choose one of {', '.join(choices)}")
    for name, hint in typing.get_type_hints(TrainConfig).items():
        value = getattr(cfg, name)
        optional = type(None) in typing.get_args(hint)
        expected = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)][0]
        if value is None and not optional:
            fail(name, "is empty (null)", "give it a value or leave it out")
        if value is None or (expected is float and type(value) is int):
            continue
        if type(value) is not expected:
            fail(name, f"expected {expected.__name__}, got {value!r}", "fix its type in the YAML file or flag")
        if expected is float and not math.isfinite(value):
            fail(name, f"{value} is not a finite number", "use a finite value")
    try:
        env_kwargs = json.loads(cfg.env_kwargs)
        assert isinstance(env_kwargs, dict)
    except (ValueError, AssertionError):
        fail("env_kwargs", f"{cfg.env_kwargs!r} is not a JSON object", 'write it like \'{"key": 1}\'')
    if cfg.group_size < 2:
        fail("group_size", f"{cfg.group_size} < 2", "GRPO needs at least 2 rollouts per task")
    for name in ("tasks_per_iter", "iterations", "mini_batch_size", "micro_batch_size", "max_new_tokens",
                 "max_prompt_length", "ppo_epochs", "eval_tasks", "save_every", "logprob_chunk_size",
                 "keep_checkpoints", "max_bad_steps"):
        if getattr(cfg, name) < 1:
            fail(name, f"{getattr(cfg, name)} < 1", "use a positive number")
    if cfg.tasks_per_iter % world_size:
        fail("tasks_per_iter", f"{cfg.tasks_per_iter} is not divisible by {world_size} processes",
             "each process rolls out whole groups: use a multiple of the process count")
    if cfg.mini_batch_size % world_size:
        fail("mini_batch_size", f"{cfg.mini_batch_size} is not divisible by {world_size} processes",
             "use a multiple of the process count")
    if cfg.mini_batch_size // world_size < cfg.micro_batch_size:
        fail("micro_batch_size", f"{cfg.micro_batch_size} exceeds the per-process mini-batch "
             f"{cfg.mini_batch_size // world_size}", "lower micro_batch_size or raise mini_batch_size")
    if (cfg.mini_batch_size // world_size) % cfg.micro_batch_size:
        fail("micro_batch_size", f"{cfg.micro_batch_size} does not divide the per-process mini-batch "
             f"{cfg.mini_batch_size // world_size}", "choose a divisor")
    if not 0 <= cfg.clip_low < 1 or cfg.clip_high < 0:
        fail("clip_low", f"clip range ({cfg.clip_low}, {cfg.clip_high}) is invalid", "use 0 <= clip < 1")
    if cfg.resume and cfg.overwrite:
        fail("overwrite", "cannot be combined with resume", "pass only one: resume continues the run, overwrite replaces it")
    if cfg.lr <= 0:
        fail("lr", f"{cfg.lr} <= 0", "use a positive learning rate")
    if cfg.diagnostics_every < 0:
        fail("diagnostics_every", f"{cfg.diagnostics_every} < 0", "use 0 (never) or a positive interval")
    for name in ("max_turns", "generation_batch_size", "history_length"):
        value, low = getattr(cfg, name), 0 if name == "history_length" else 1
        if value is not None and value < low:
            fail(name, f"{value} < {low}", f"use at least {low} (or leave it unset for the default)")
    for name in ("temperature", "eval_temperature", "kl_coef", "entropy_coef", "sdar_coef", "skill_sd_coef",
                 "beta", "lora_r", "warmup_ratio", "weight_decay"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 0:
            fail(name, f"{getattr(cfg, name)} < 0", "use a value >= 0")
    if cfg.grad_clip <= 0:
        fail("grad_clip", f"{cfg.grad_clip} <= 0", "use a positive norm, e.g. 1.0")
    if cfg.dual_clip is not None and cfg.dual_clip <= 1:
        fail("dual_clip", f"{cfg.dual_clip} <= 1", "use a bound above 1 (paper: 3.0) or leave it unset to turn it off")
    if cfg.env_backend == "real" and cfg.env_name in REAL_ENV_PACKAGES:
        package = REAL_ENV_PACKAGES[cfg.env_name]
        if importlib.util.find_spec(package) is None:
            fail("env_backend", f"the real {cfg.env_name} needs the '{package}' package, which is not installed",
                 "see README 'Real benchmarks', or use env_backend=builtin")
    validate_env_setup(cfg, env_kwargs)
    if cfg.model != "embedded":
        path = os.path.expanduser(cfg.model)
        looks_like_path = os.path.exists(path) or cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") != 1
        if looks_like_path and not os.path.isfile(os.path.join(path, "config.json")):
            fail("model", f"{cfg.model!r} is not a model folder (no config.json)",
                 "give a folder written by save_pretrained, a hub id like Qwen/Qwen2.5-0.5B-Instruct, or 'embedded'")


def env_kwargs_of(cfg: TrainConfig) -> dict:
    """The keyword arguments of the env class: `env_kwargs` plus the `prompt_template` field."""
    kwargs = json.loads(cfg.env_kwargs)
    if cfg.prompt_template is not None:
        kwargs["prompt_template"] = cfg.prompt_template
    return kwargs


def validate_env_setup(cfg: TrainConfig, env_kwargs: dict) -> None:
    """The env's kwargs, prompt template, real-benchmark setup and skill folder (cheap: files and
    signatures only, no network), so that a misspelled key or a missing data folder fails here."""
    from envs import check_env_kwargs
    from envs.base import EnvSetupError
    from envs.skills import check_skills_dir

    if cfg.prompt_template is not None and "prompt_template" in env_kwargs:
        raise ConfigError("prompt_template: given both as a field and in env_kwargs; keep one")
    try:
        check_env_kwargs(cfg.env_name, cfg.env_backend, env_kwargs_of(cfg))
    except (ValueError, EnvSetupError) as error:
        raise ConfigError(str(error)) from None
    if cfg.skills_dir is not None:
        try:
            check_skills_dir(cfg.skills_dir, cfg.env_name)
        except ValueError as error:
            raise ConfigError(f"skills_dir: {error}") from None


HELP_HEADER = "\n".join([
    "SDAR training (README: the default run; reproducing the paper).", "",
    "Each default shown below is what this command line would run. The dataclass defaults are the paper's",
    "(SPEC §4); a bare `python train.py` runs the embedded tiny agent (--model embedded), for which",
    "config.EMBEDDED_DEFAULTS replace them:",
    textwrap.fill(", ".join(f"{k}={v}" for k, v in EMBEDDED_DEFAULTS.items()), 100, initial_indent="  ",
                  subsequent_indent="  "),
    "A --config YAML file's values override those, and flags override everything. --parity released fills",
    "every switch you leave unset the released code's way; --dry_run true prints the resolved config and",
    "checks the env's setup. Compare `python train.py --help` with `python train.py --model ORG/NAME --help`."])


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The header as written, and each field's default (the --config file's value when one is given)."""


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """CLI flags over an optional YAML file over the (embedded CPU) defaults; then resolve presets."""
    import yaml
    from transformers import HfArgumentParser

    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser(TrainConfig, description=HELP_HEADER, formatter_class=HelpFormatter)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    pre, _ = HfArgumentParser(TrainConfig, add_help=False).parse_known_args(argv)   # --help waits for the YAML
    values = {}
    if pre.config:
        if not os.path.isfile(pre.config):
            raise ConfigError(f"config: file {pre.config!r} not found; give the path of a YAML file")
        with open(pre.config) as handle:
            values = yaml.safe_load(handle) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"config: {pre.config} must hold a mapping of field: value")
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"config: unknown field(s) {', '.join(unknown)} in {pre.config}; see train.py --help")
    model = pre.model if any(a.split("=")[0] == "--model" for a in argv) else values.get("model", pre.model)
    if model == "embedded":
        parser.set_defaults(**EMBEDDED_DEFAULTS)
    parser.set_defaults(**values)
    (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    probe = HfArgumentParser(TrainConfig, add_help=False)      # which flags were given, however spelled
    unset = object()
    probe.set_defaults(**{name: unset for name in known})
    flags, _ = probe.parse_known_args(argv)
    return resolve(cfg, set(values) | {name for name, value in vars(flags).items() if value is not unset})
