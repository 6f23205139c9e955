"""The command line of train.py: flags over a YAML file (`--config`) over the presets, a help that shows
the value each field resolves to and where it comes from, and one-line errors for unknown flags (with a
"did you mean"). What a run is set to, and the checks, are `config.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import sys
import textwrap

from config import (EMBEDDED_DEFAULTS, ENVS, METHODS, PARITY, PARITY_PER_ENV, ConfigError, TrainConfig, check_types,
                    field_types, json_object, preset_layers, resolve)

def _table(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "(nothing)"


HELP_HEADER = "\n".join([
    "SDAR training (README: the default run; reproducing the paper).", "",
    "Each (default: ...) below is the value this command line runs with, and where it comes from when that is",
    "not the dataclass itself. The dataclass defaults (config.TrainConfig) are the paper's SDAR on ALFWorld",
    "(paper Appendix C, Table 3). Presets change only what differs and only what you leave out, each later",
    "one winning (env_kwargs merge key by key):",
    *textwrap.wrap("env (config.ENVS): " + "; ".join(f"{name}: {_table(values)}" for name, values in ENVS.items()
                                                  if values), 110, initial_indent="  ", subsequent_indent="    "),
    *textwrap.wrap("method (config.METHODS): " + "; ".join(f"{name}: {_table(values)}" for name, values in METHODS.items()),
                   110, initial_indent="  ", subsequent_indent="    "),
    *textwrap.wrap(f"--parity released (config.PARITY): {_table(PARITY['released'])}; per env (config.PARITY_PER_ENV) "
                   + "; ".join(f"{name}: {_table(values)}" for name, values in PARITY_PER_ENV["released"].items()),
                   110, initial_indent="  ", subsequent_indent="    "),
    *textwrap.wrap(f"--preset embedded (config.EMBEDDED_DEFAULTS): {_table(EMBEDDED_DEFAULTS)}", 110,
                   initial_indent="  ", subsequent_indent="    "),
    "--preset auto picks embedded for --model embedded (a bare `python train.py`) and for a model folder written",
    "by a run on the embedded preset, else paper. A --config YAML file's values override the presets, and flags",
    "override everything. --dry_run true prints the resolved config and checks the env's setup. Compare",
    "`python train.py --help` with `python train.py --model ORG/NAME --help`."])


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The header as written; help texts wrapped without splitting a value at a hyphen (runs/search-sdar)."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are ConfigErrors (one line, exit 2 in train.main) instead of a usage dump."""

    def error(self, message):
        raise ConfigError(f"{message}; see train.py --help")


def _bool(text: str) -> bool:
    """true/false, yes/no, 1/0 in any case (a bare flag is true)."""
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _or_none(kind):
    """A converter that reads none/null as None, for the fields where None means off or 'the env's own'."""
    def convert(text: str):
        return None if text.lower() in ("none", "null") else kind(text)
    convert.__name__ = kind.__name__
    return convert


def make_parser(values: dict | None = None, sources: dict | None = None) -> ArgumentParser:
    """One --flag per TrainConfig field. Without `values` nothing gets a default, so parsing yields only
    what was typed; with them (the resolved config) the help shows each as its default, with its source."""
    parser = ArgumentParser(prog="train.py", usage="%(prog)s [--FIELD VALUE ...]   (every field below is a flag)",
                            description=HELP_HEADER, formatter_class=HelpFormatter,
                            add_help=False, allow_abbrev=False, argument_default=argparse.SUPPRESS)
    parser.add_argument("-h", "--help", action="store_true", help="Show this help (with the values this command "
                        "line resolves to) and exit.")
    for name, (kind, optional) in field_types().items():
        convert = _bool if kind is bool else kind
        convert = _or_none(convert) if optional else convert
        doc = TrainConfig.__dataclass_fields__[name].metadata["help"].replace("%", "%%")
        options = dict(type=convert, metavar=kind.__name__.upper(), help=" ".join(doc.split()))
        if kind is bool:
            options.update(nargs="?", const=True, metavar="true|false")
        if values is not None:
            source = (sources or {}).get(name)
            shown = json.dumps(values[name]) if values[name] is None or kind is bool else values[name]
            options["help"] += f" (default: {shown}{'; ' + source if source else ''})".replace("%", "%%")
        parser.add_argument(f"--{name}", **options)
    return parser


def unknown_flag_error(unknown: list[str]) -> ConfigError:
    """The first argument no field takes, with the closest field name ('did you mean')."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    word = unknown[0]
    if not word.startswith("-"):
        return ConfigError(f"{word}: unexpected argument (every setting is a --flag VALUE pair); see train.py --help")
    flag = word.split("=", 1)[0].lstrip("-")
    if flag.startswith("no_") and flag[3:] in names:
        return ConfigError(f"--{flag}: no such flag; write --{flag[3:]} false")
    close = difflib.get_close_matches(flag, names, n=1, cutoff=0.6)
    hint = f"did you mean --{close[0]}? " if close else ""
    return ConfigError(f"--{flag}: no such flag; {hint}see train.py --help for the list")


def read_yaml(path: str) -> dict:
    """The fields of a --config YAML file, checked to be a mapping of known field names."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config: file {path!r} not found; give the path of a YAML file")
    with open(path) as handle:
        values = yaml.safe_load(handle) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: {path} must hold a mapping of field: value")
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        close = difflib.get_close_matches(unknown[0], [f.name for f in dataclasses.fields(TrainConfig)], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"config: unknown field(s) {', '.join(unknown)}{hint} in {path}; see train.py --help")
    return values


def value_sources(cfg: TrainConfig, values: dict, flags: dict) -> dict:
    """For the help: where each resolved value comes from, when not the dataclass default."""
    sources = {}
    for layer, preset in preset_layers(cfg):
        sources.update({name: layer for name in preset})
    if "preset" not in values and "preset" not in flags:
        sources["preset"] = "chosen by auto"
    yaml_source = f"from {flags.get('config')}"
    sources.update({name: yaml_source for name in values})
    sources.update({name: "your flag" for name in flags})
    if "env_kwargs" in values or "env_kwargs" in flags:
        kwargs_layers = [layer for layer, preset in preset_layers(cfg) if "env_kwargs" in preset]
        kwargs_layers += [yaml_source] * ("env_kwargs" in values) + ["your flag"] * ("env_kwargs" in flags)
        sources["env_kwargs"] = "merged: " + " + ".join(kwargs_layers)
    return sources


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """CLI flags over an optional YAML file over the presets over the dataclass defaults. Only what the user
    typed counts as set, so a flag that repeats a default still wins over a preset. `--help` prints the
    values this command line resolves to and exits (SystemExit 0)."""
    argv = sys.argv[1:] if argv is None else argv
    namespace, unknown = make_parser().parse_known_args(argv)
    if unknown:
        raise unknown_flag_error(unknown)
    flags = vars(namespace)
    wants_help = flags.pop("help", False)
    values = read_yaml(flags["config"]) if flags.get("config") else {}
    check_types(values)
    merged = {**values, **flags}
    if "env_kwargs" in values and "env_kwargs" in flags:
        yaml_kwargs, flag_kwargs = json_object(values["env_kwargs"]), json_object(flags["env_kwargs"])
        if yaml_kwargs is not None and flag_kwargs is not None:
            merged["env_kwargs"] = json.dumps({**yaml_kwargs, **flag_kwargs})
    cfg = resolve(TrainConfig(**merged), given=set(merged))
    if wants_help:
        make_parser(dataclasses.asdict(cfg), value_sources(cfg, values, flags)).print_help()
        raise SystemExit(0)
    return cfg
