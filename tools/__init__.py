"""Tools around the algorithm (not on its reading path): `python -m tools.compare` (methods and the
ablation grid over seeds), `python -m tools.bench` (speed and memory), `python -m tools.warmstart`
(rebuild the shipped embedded agent), `tools.tinymodel` (tiny Qwen2 models and a local tokenizer for
tests and benchmarks). Core files never import from here."""
