"""The training configuration: one dataclass, the presets, and validation.

The dataclass defaults are the paper's SDAR on ALFWorld (paper Appendix C, Table 3, and the released run
scripts). Each preset is one table of what differs: the env (`ENVS`), the method row (`METHODS`),
`--parity released` (`PARITY`) and the CPU sizes of the embedded agent (`EMBEDDED_DEFAULTS`, `--preset`).
Values come from, in increasing priority: the dataclass, those presets in that order, a YAML file
(`--config`) and command-line flags; a preset sets only what the user did not, and env_kwargs merge key
by key. `python train.py --help` (cli.py, the command line) lists every field with its docstring and the
value it resolves to.
Validation runs before any model or environment loads, and every error names the field and the fix.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import json
import math
import os
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
    preset: str = "auto"
    """paper (the dataclass defaults: the paper's sizes) | embedded (the CPU sizes of EMBEDDED_DEFAULTS) | auto:
    embedded for --model embedded and for a model folder written by a run on the embedded preset, else paper."""
    trust_remote_code: bool = False
    """Allow a checkpoint to run its own Python code. Off unless you trust the checkpoint."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    mixed_precision: str = "auto"
    """auto (bf16 autocast over float32 weights on a GPU, float32 on a CPU) | bf16 | no: the precision of every
    forward (rollout, scoring passes, update). bf16 on a CPU rehearses the GPU's numerics (slowly)."""
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
    """Tasks (groups) per iteration over all processes."""
    group_size: int = 8
    """Rollouts per task (G) for the group-relative advantage."""
    history_length: int = 2
    """(observation, action) pairs in the prompt."""
    max_turns: int = 50
    """Turn limit of an episode (an env's own max_steps in env_kwargs can end it earlier)."""
    max_prompt_length: int = 2048
    """Prompt tokens (left-truncated)."""
    max_new_tokens: int = 512
    """Response tokens per turn."""
    stop_at_action: bool = True
    """Stop sampling at the first closed action tag and train on the response up to it (this project), or
    sample to EOS or the token budget and train on all of it (false: the released code)."""
    temperature: float = 1.0
    """Sampling temperature of training rollouts (top-p 1.0, no top-k)."""
    invalid_penalty: float = 0.1
    """Score subtracted from an invalid step."""
    generation_batch_size: int | None = None
    """Rows per generate call (None = all active environments at once)."""
    fast_decode: bool = False
    """Static KV cache + torch.compile for generate (GPU; bucketed shapes, warm-up cost reported)."""

    parity: str = "project"
    """project (this project's defaults) | released (every switch the released code's way: see README
    'Differences from the released code'). Sets only what you leave out."""
    method: str = "sdar"
    """sdar | grpo | grpo_opsd | opsd | skill_grpo | skill_sd | rlsd: the paper's table rows (config.METHODS
    sets the coefficients below that you leave out)."""
    pg_coef: float = 1.0
    """Weight of the GRPO policy loss (0 = OPSD only)."""
    kl_coef: float = 0.01
    """Weight of the k3 KL to the initial model. 0 skips the reference model."""
    entropy_coef: float = 0.001
    """Weight of the entropy bonus (on in every released run)."""
    sdar_coef: float = 0.01
    """Weight of the gated self-distillation loss (lambda; 0 = GRPO)."""
    beta: float = 5.0
    """Gate sharpness: g = sigmoid(beta * gap) (0 = naive GRPO+OPSD, a constant gate 0.5)."""
    skill_sd_coef: float = 0.0
    """Weight of the Skill-SD term (method skill_sd: 0.001)."""
    rlsd_lam: float = 0.0
    """RLSD advantage reweighting strength (method rlsd: 0.5; 0 = off)."""
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
    skill_retrieval: str = "keyword"
    """keyword | full | random | ucb | released (ALFWorld by task type, WebShop by keywords, Search by data
    source; what --parity released uses)."""
    skills_dir: str | None = None
    """A skill folder such as the released SkillBank (<env>/general.md + one file per category); None = skills/."""
    show_skills_to_student: bool = False
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
    loss_agg: str = "token-mean"
    """token-mean (over the whole mini-batch) | micro-token-mean (released code: per micro-batch)
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
    eval_split: str = "valid_seen"
    """The split the evaluation panel is drawn from."""
    final_eval_tasks: int = 0
    """After training, a last evaluation on this many tasks of the eval split (-1: all of it, as the released
    Search-QA code does greedily; 0: none), logged as final/* in the last row."""
    eval_temperature: float = 0.4
    """Sampling temperature of the evaluations (0 = greedy)."""
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

# The presets: each table holds only what differs from the dataclass defaults above (the paper's SDAR on
# ALFWorld: paper Appendix C, Table 3, and the released run scripts). `resolve` applies them in this order,
# a later one winning, and only to the fields the user did not set; env_kwargs merge key by key.

# What WebShop and Search-QA change (paper Appendix C; the released run scripts per env).
ENVS = {
    "alfworld": {},
    "webshop": dict(max_turns=15, max_prompt_length=4096, mini_batch_size=64, eval_split="test"),
    "search": dict(tasks_per_iter=128, history_length=4, max_turns=4, max_prompt_length=4096, invalid_penalty=0.01,
                   kl_coef=0.001, warmup_ratio=0.1, eval_split="test", eval_temperature=0.0),
}
# The paper's table rows (paper Table 1): what each method changes from SDAR.
METHODS = {
    "sdar": {},
    "grpo": dict(sdar_coef=0.0),
    "grpo_opsd": dict(beta=0.0),
    "opsd": dict(pg_coef=0.0),
    "skill_grpo": dict(sdar_coef=0.0, show_skills_to_student=True),
    "skill_sd": dict(sdar_coef=0.0, skill_sd_coef=0.001),
    "rlsd": dict(sdar_coef=0.0, rlsd_lam=0.5),
}
# `--parity released`: every switch the released code's way (README 'Differences from the released code');
# per env also the released micro-batch (`ppo_micro_batch_size_per_gpu`, which sets each sample's weight under
# the per-micro-batch token mean) and, on Search-QA, its greedy evaluation of the whole test split after
# training and no last-turn hint.
PARITY = {
    "project": {},
    "released": dict(stop_at_action=False, loss_agg="micro-token-mean", skill_retrieval="released",
                     env_kwargs='{"clip_observations": false, "action_parse": "released"}'),
}
PARITY_PER_ENV = {"released": {
    "alfworld": dict(micro_batch_size=32),
    "webshop": dict(micro_batch_size=8),
    "search": dict(micro_batch_size=16, final_eval_tasks=-1, env_kwargs='{"last_turn_hint": false}'),
}}
# `--preset embedded`, what `python train.py` runs on the embedded tiny agent (assets/embedded-alfworld):
# the same algorithm, sized for a 2-core CPU (about 3 minutes): small rooms of 5-7 receptacles, the two
# shortest task types, an 8-step budget (so searching the right place first matters), objects at their
# usual place 90 % of the time (`prior_strength`, what the skills state), one history step, short
# responses, fewer and smaller batches, and a larger lr than the paper's 1e-6 because the model has under
# a million parameters. tools/warmstart.py trains the agent on these same env settings. Evaluation
# samples at the paper's temperature 0.4 on a fixed panel of 128 tasks, as in the paper.
EMBEDDED_DEFAULTS = dict(
    output_dir="runs/embedded",
    env_kwargs=json.dumps({"room_size": "small", "num_receptacles": [5, 7], "num_distractors": [0, 1],
                           "task_types": ["pick_and_place_simple", "look_at_obj_in_light"],
                           "prior_strength": 0.9, "max_steps": 8}),
    history_length=1, max_turns=8, max_new_tokens=24, tasks_per_iter=4, group_size=8, lr=3e-4,
    mini_batch_size=64, micro_batch_size=32, iterations=16, eval_every=4, eval_tasks=128, eval_temperature=0.4,
    save_every=4,
)
PRESETS = ("auto", "embedded", "paper")
RUN_CONFIG = "sdar_config.json"     # the training config a model folder of this project was written by

CHOICES = {
    "env_backend": BACKENDS, "gate": GATES, "divergence": DIVERGENCES, "teacher_context": TEACHER_CONTEXTS,
    "skill_retrieval": RETRIEVAL_MODES, "loss_agg": AGG_MODES, "report_to": ("none", "tensorboard", "wandb"),
    "mixed_precision": ("auto", "bf16", "no"),
    "method": tuple(METHODS), "parity": tuple(PARITY), "preset": PRESETS,
}
REAL_ENV_PACKAGES = {"alfworld": "alfworld"}  # WebShop is a checkout, checked by RealWebShop.check_kwargs


def trained_with(model: str) -> dict:
    """The training config of a model folder written by this project (final/ or a checkpoint's model/,
    which hold a copy of it; a final/ of an older run: its run's config.json), else {}."""
    folder = os.path.expanduser(model)
    candidates = [os.path.join(folder, RUN_CONFIG)]
    if os.path.basename(os.path.normpath(folder)) == "final":
        candidates.append(os.path.join(folder, os.pardir, "config.json"))
    for path in candidates:
        try:
            with open(path) as handle:
                found = json.load(handle)
        except (OSError, ValueError):
            continue
        if isinstance(found, dict):
            return found
    return {}


def choose_preset(cfg: TrainConfig) -> str:
    """`preset` auto -> embedded for the embedded agent (by name or its folder) and for a folder trained on
    the embedded preset (continuing one's own run keeps its sizes), else paper."""
    if cfg.preset != "auto":
        return cfg.preset
    if cfg.model == "embedded":
        return "embedded"
    from embedded import ASSETS, ROOT
    shipped = {os.path.realpath(os.path.join(ROOT, folder)) for folder in ASSETS.values()}
    if os.path.realpath(os.path.expanduser(cfg.model)) in shipped:
        return "embedded"
    previous = trained_with(cfg.model)
    if previous.get("preset") == "embedded" or (not previous.get("preset") and previous.get("model") == "embedded"):
        return "embedded"
    return "paper"


def preset_layers(cfg: TrainConfig) -> list[tuple[str, dict]]:
    """(name, values) of each preset that applies to this env, method, parity and preset, lowest first."""
    layers = [(f"env {cfg.env_name}", ENVS.get(cfg.env_name, {})), (f"method {cfg.method}", METHODS.get(cfg.method, {})),
              (f"parity {cfg.parity}", PARITY.get(cfg.parity, {}))]
    layers.append((f"parity {cfg.parity}, {cfg.env_name}", PARITY_PER_ENV.get(cfg.parity, {}).get(cfg.env_name, {})))
    if cfg.preset == "embedded":
        layers.append(("embedded preset", EMBEDDED_DEFAULTS))
    return [(name, values) for name, values in layers if values]


def json_object(text: str) -> dict | None:
    """The dict a JSON text holds, or None (validate reports a malformed env_kwargs)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def resolve(cfg: TrainConfig, given: set[str] | None = None) -> TrainConfig:
    """Fill every field the user did not set from the presets (explicit values always win); env_kwargs
    merge key by key, the user's keys over the presets'. `given`: the fields the user set (parse_config
    knows them from the flags and the YAML file); without it, a field that still holds its dataclass
    default counts as unset."""
    if given is None:
        given = {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != f.default}
    cfg.preset = choose_preset(cfg)
    preset_kwargs = {}
    for _, values in preset_layers(cfg):
        for name, value in values.items():
            if name == "env_kwargs":
                preset_kwargs.update(json_object(value))
            elif name not in given:
                setattr(cfg, name, value)
    user_kwargs = json_object(cfg.env_kwargs)
    if preset_kwargs and user_kwargs is not None:
        cfg.env_kwargs = json.dumps({**preset_kwargs, **user_kwargs})
    return cfg


def preset_note(cfg: TrainConfig) -> str:
    """What the presets chose for this run, in words, with the flag that picks the other preset, and the
    env kwargs merged from them: printed at start-up, so that no setting changes behind the user's back."""
    other = "paper" if cfg.preset == "embedded" else "embedded"
    if cfg.preset == "embedded" and cfg.model == "embedded":
        why = "the shipped embedded agent"
    elif cfg.preset == "embedded":
        why = f"{cfg.model} was trained by a run on the embedded preset" if trained_with(cfg.model) else \
              f"{cfg.model} is the shipped embedded agent"
    else:
        why = "the model is not the embedded agent" if cfg.model != "embedded" else "--preset paper"
    sizes = (f"{cfg.iterations} iterations of {cfg.tasks_per_iter} tasks x {cfg.group_size}, lr {cfg.lr:g}, "
             f"{cfg.max_new_tokens} new tokens")
    lines = [f"preset: {cfg.preset} ({why}): {sizes}; --preset {other} runs the {other} sizes instead"]
    preset_kwargs = {}
    for name, values in preset_layers(cfg):
        if "env_kwargs" in values:
            preset_kwargs.update(json_object(values["env_kwargs"]))
    final = json_object(cfg.env_kwargs) or {}
    yours = {k: v for k, v in final.items() if k not in preset_kwargs or preset_kwargs[k] != v}
    if preset_kwargs and yours:
        lines.append(f"env_kwargs: yours {json.dumps(yours)} merged into the presets' {json.dumps(preset_kwargs)}")
    return "\n".join(lines)


def field_types() -> dict[str, tuple[type, bool]]:
    """{field: (its type, whether None is allowed)} from the dataclass annotations."""
    types_ = {}
    for name, hint in typing.get_type_hints(TrainConfig).items():
        kinds = [t for t in typing.get_args(hint) or (hint,) if t is not type(None)]
        types_[name] = (kinds[0], type(None) in typing.get_args(hint))
    return types_


def check_types(values: dict) -> None:
    """Raise ConfigError for the first value of the wrong type (YAML gives any type; an int is a float)."""
    for name, (expected, optional) in field_types().items():
        if name not in values:
            continue
        value = values[name]
        if value is None and not optional:
            raise ConfigError(f"{name}: is empty (null); give it a value or leave it out")
        if value is None or (expected is float and type(value) is int):
            continue
        if type(value) is not expected:
            raise ConfigError(f"{name}: expected {expected.__name__}, got {value!r}; fix its type in the YAML file or flag")
        if expected is float and not math.isfinite(value):
            raise ConfigError(f"{name}: {value} is not a finite number; use a finite value")


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
    check_types(dataclasses.asdict(cfg))
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
    if cfg.diagnostics_every < 0:
        fail("diagnostics_every", f"{cfg.diagnostics_every} < 0", "use 0 (never) or a positive interval")
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
    for name in ("max_turns", "generation_batch_size", "history_length"):
        value, low = getattr(cfg, name), 0 if name == "history_length" else 1
        if value is not None and value < low:
            fail(name, f"{value} < {low}", f"use at least {low}")
    for name in ("temperature", "eval_temperature", "kl_coef", "entropy_coef", "sdar_coef", "skill_sd_coef",
                 "beta", "lora_r", "warmup_ratio", "weight_decay"):
        if getattr(cfg, name) < 0:
            fail(name, f"{getattr(cfg, name)} < 0", "use a value >= 0")
    if cfg.grad_clip <= 0:
        fail("grad_clip", f"{cfg.grad_clip} <= 0", "use a positive norm, e.g. 1.0")
    if cfg.dual_clip is not None and cfg.dual_clip <= 1:
        fail("dual_clip", f"{cfg.dual_clip} <= 1", "use a bound above 1 (paper: 3.0) or leave it unset to turn it off")
    if cfg.env_backend == "real" and cfg.env_name in REAL_ENV_PACKAGES:
        package = REAL_ENV_PACKAGES[cfg.env_name]
        if importlib.util.find_spec(package) is None:
            fail("env_backend", f"the real {cfg.env_name} needs the '{package}' package, which is not installed",
                 "see README 'Real models and real benchmarks', or use env_backend=builtin")
    if cfg.preset == "embedded" and cfg.env_name != "alfworld":
        fail("preset", f"the embedded preset sizes the built-in ALFWorld, not {cfg.env_name}",
             "pass --preset paper (and a --model for this env), or --env_name alfworld")
    validate_env_setup(cfg, env_kwargs)
    if cfg.model != "embedded":
        validate_model_folder(cfg)


def validate_model_folder(cfg: TrainConfig) -> None:
    """A local --model folder: it holds a config.json, its safetensors weights are whole (headers read, no
    weights loaded), and it does not lie in output_dir, whose final/ and checkpoints this run rewrites."""
    from checkpoint import damaged_weights

    path = os.path.expanduser(cfg.model)
    looks_like_path = os.path.exists(path) or cfg.model.startswith((".", "/", "~")) or cfg.model.count("/") != 1
    if not looks_like_path:
        return                                  # a hub id: from_pretrained reports what it cannot reach
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(f"model: {cfg.model!r} is not a model folder (no config.json); give a folder written by "
                          "save_pretrained, a hub id like Qwen/Qwen2.5-0.5B-Instruct, or 'embedded'")
    damage = damaged_weights(path)
    if damage:
        raise ConfigError(f"model: {os.path.join(cfg.model, damage[0])} is damaged ({damage[1]}); save the model "
                          "again, or give another folder")
    output_dir = os.path.realpath(cfg.output_dir)
    if os.path.commonpath([os.path.realpath(path), output_dir]) == output_dir:
        raise ConfigError(f"output_dir: {cfg.output_dir} holds the model this run starts from ({cfg.model}), and "
                          "the run would write over it; give another --output_dir")


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
