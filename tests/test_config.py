"""What a user types is what runs: the paper's values in the dataclass, presets that fill only what the
user left out, env kwargs that merge, the preset a --model folder gets, and a --help that shows the
values this command line resolves to."""

import dataclasses
import inspect
import json
import os
import re
import shutil

import pytest

from cli import parse_config
from config import EMBEDDED_DEFAULTS, RUN_CONFIG, TrainConfig, preset_note, validate
from conftest import ROOT

EMBEDDED_KWARGS = json.loads(EMBEDDED_DEFAULTS["env_kwargs"])


def test_the_dataclass_holds_the_paper_values_and_no_unset_coefficient():
    """cleanrl style: the value is where the reader looks. None stays only where it means something."""
    cfg = TrainConfig()
    assert (cfg.pg_coef, cfg.kl_coef, cfg.entropy_coef, cfg.sdar_coef, cfg.beta) == (1.0, 0.01, 0.001, 0.01, 5.0)
    assert (cfg.lr, cfg.iterations, cfg.tasks_per_iter, cfg.group_size, cfg.mini_batch_size) == (1e-6, 150, 16, 8, 256)
    assert (cfg.history_length, cfg.max_turns, cfg.invalid_penalty, cfg.eval_temperature) == (2, 50, 0.1, 0.4)
    unset = {f.name for f in dataclasses.fields(TrainConfig) if f.default is None}
    assert unset == {"config", "prompt_template", "generation_batch_size", "skills_dir"}


def test_the_objective_defaults_are_the_dataclass_defaults():
    """objective.py stays copyable without config.py, so a test keeps its keyword defaults from drifting."""
    from objective import objective_terms                          # sdar_objective passes them on
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    compared = 0
    for name, parameter in inspect.signature(objective_terms).parameters.items():
        field = {"agg": "loss_agg"}.get(name, name)
        tensor = name in ("entropy", "divergence")                 # tensors here, settings in the config
        if parameter.default is not inspect.Parameter.empty and field in fields and not tensor:
            assert parameter.default == fields[field], name
            compared += 1
    assert compared == 13


def test_presets_fill_only_what_the_user_did_not_type():
    """A flag that repeats the dataclass default still wins over a preset (today's None is gone)."""
    grpo = parse_config(["--model", "Qwen/Qwen2.5-0.5B", "--method", "grpo"])
    assert grpo.sdar_coef == 0.0
    typed = parse_config(["--model", "Qwen/Qwen2.5-0.5B", "--method", "grpo", "--sdar_coef", "0.01"])
    assert typed.sdar_coef == 0.01
    search = parse_config(["--model", "Qwen/Qwen2.5-0.5B", "--env_name", "search", "--kl_coef", "0.01"])
    assert (search.kl_coef, search.history_length, search.max_turns, search.eval_temperature) == (0.01, 4, 4, 0.0)
    embedded = parse_config(["--lr", "1e-06", "--iterations", "150"])
    assert (embedded.preset, embedded.lr, embedded.iterations, embedded.tasks_per_iter) == ("embedded", 1e-6, 150, 4)


def test_env_kwargs_merge_into_the_default_run_and_say_so(tmp_path):
    """Item 1: one key by hand keeps the small rooms, the two task types and the 8-step budget."""
    cfg = parse_config(["--env_kwargs", '{"prior_strength": 0.1}'])
    assert json.loads(cfg.env_kwargs) == {**EMBEDDED_KWARGS, "prior_strength": 0.1}
    assert 'yours {"prior_strength": 0.1} merged into' in preset_note(cfg)
    assert json.loads(parse_config(["--env_kwargs", '{"room_size": "full"}']).env_kwargs)["max_steps"] == 8
    path = tmp_path / "run.yaml"
    path.write_text("env_kwargs: '{\"prior_strength\": 0.5, \"max_steps\": 6}'\n")
    layered = parse_config(["--config", str(path), "--env_kwargs", '{"prior_strength": 0.2}'])
    assert json.loads(layered.env_kwargs) == {**EMBEDDED_KWARGS, "prior_strength": 0.2, "max_steps": 6}
    assert "merged into" not in preset_note(parse_config([]))


def model_folder(folder, run_config=None, parent_config=None):
    """A model folder as this project writes it: final/ of a run (weights copied from the shipped agent)."""
    shutil.copytree(os.path.join(ROOT, "assets", "embedded-alfworld"), folder)
    if run_config is not None:
        (folder / RUN_CONFIG).write_text(json.dumps(run_config))
    if parent_config is not None:
        (folder.parent / "config.json").write_text(json.dumps(parent_config))
    return str(folder)


def test_a_model_folder_of_an_embedded_run_keeps_the_embedded_sizes(tmp_path):
    """Item 2: continuing from one's own embedded run keeps its settings, says so and names the other
    preset; a folder of another origin gets the paper's, also said; --preset picks either by hand."""
    own = model_folder(tmp_path / "run" / "final", run_config={"model": "embedded", "preset": "embedded"})
    cfg = parse_config(["--model", own, "--output_dir", str(tmp_path / "next")])
    assert (cfg.preset, cfg.iterations, cfg.max_new_tokens, json.loads(cfg.env_kwargs)) == \
        ("embedded", 16, 24, EMBEDDED_KWARGS)
    note = preset_note(cfg)
    assert "preset: embedded" in note and "trained by a run on the embedded preset" in note and "--preset paper" in note
    validate(cfg)
    older = model_folder(tmp_path / "old" / "final", parent_config={"model": "embedded"})   # before sdar_config.json
    assert parse_config(["--model", older]).preset == "embedded"
    other = model_folder(tmp_path / "other", run_config={"model": "Qwen/Qwen2.5-3B", "preset": "paper"})
    paper = parse_config(["--model", other])
    assert (paper.preset, paper.iterations, paper.lr) == ("paper", 150, 1e-6)
    assert "preset: paper" in preset_note(paper) and "--preset embedded" in preset_note(paper)
    assert parse_config(["--model", own, "--preset", "paper"]).iterations == 150
    assert parse_config(["--model", other, "--preset", "embedded"]).iterations == 16


def test_a_run_into_the_folder_of_its_own_model_is_refused(tmp_path):
    """runs/embedded/final as --model with the embedded output_dir: the run would write over its model."""
    from config import ConfigError
    own = model_folder(tmp_path / "run" / "final", run_config={"model": "embedded", "preset": "embedded"})
    with pytest.raises(ConfigError, match=r"^output_dir: .* holds the model this run starts from .*--output_dir"):
        validate(parse_config(["--model", own, "--output_dir", str(tmp_path / "run")]))


def help_defaults(argv, capsys):
    """{field: the text of its '(default: ...)'} from `--help` after argv."""
    with pytest.raises(SystemExit) as stop:
        parse_config(argv + ["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    found = {}
    for name in (f.name for f in dataclasses.fields(TrainConfig)):
        entry = re.search(rf" --{name} (?:STR|INT|FLOAT|\[true\|false\]) (.*?)(?= --[a-z_]+ (?:STR|INT|FLOAT|\[true)|$)",
                          text)
        assert entry, name
        found[name] = re.findall(r"\(default: (.*?)(?:; [^;()]*)?\)", entry.group(1))[-1]
    return found, text


def shown(value):
    return json.dumps(value) if value is None or isinstance(value, bool) else str(value)


@pytest.mark.parametrize("argv", [
    [],
    ["--model", "Qwen/Qwen2.5-0.5B-Instruct"],
    ["--method", "grpo", "--eval_teacher", "false", "--env_kwargs", '{"prior_strength": 0.1}'],
    ["--config", os.path.join(ROOT, "configs", "search.yaml"), "--model", "Qwen/Qwen2.5-0.5B-Instruct",
     "--parity", "released"],
    ["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--env_name", "webshop", "--method", "opsd"],
])
def test_help_shows_what_this_command_line_runs(argv, capsys):
    """Item 3: every field's shown default is its value in the config this command line runs, with
    --model and --config taken into account; no field shows None, no --no_X flag repeats a text."""
    cfg = parse_config(argv)
    defaults, text = help_defaults(argv, capsys)
    for name, value in dataclasses.asdict(cfg).items():
        assert defaults[name] == shown(value), (name, defaults[name], value)
    assert "(default: None" not in text and " --no_" not in text


def test_help_names_where_a_value_comes_from(capsys):
    _, text = help_defaults(["--model", "Qwen/Qwen2.5-0.5B-Instruct", "--env_name", "search", "--lr", "2e-6"], capsys)
    assert "(default: 0.001; env search)" in text and "(default: 2e-06; your flag)" in text
    assert "(default: paper; chosen by auto)" in text


def test_the_sparse_regime_config_is_the_embedded_run_with_five_turns():
    """configs/embedded-sparse.yaml (README "Does the gate help?") changes the turn budget and nothing else."""
    sparse = parse_config(["--config", os.path.join(ROOT, "configs", "embedded-sparse.yaml")])
    default = parse_config([])
    assert sparse.max_turns == 5 and default.max_turns == 8
    changed = {f.name for f in dataclasses.fields(TrainConfig) if getattr(sparse, f.name) != getattr(default, f.name)}
    assert changed == {"config", "max_turns", "output_dir"}
