"""The sweep file: parsed, validated, and expanded into trials before anything starts.

Validation errors are one line that names the file and the dotted field (`SpecError`); the CLI
prints it and exits 2. Nothing here touches Ray or MLflow. `schema` says what each field takes,
`checks` what spans fields and registries (knobs against their method, the search), `loading` how a
file becomes a `Sweep` (YAML limits, `--set`). What only the machine can tell (the data is there,
the models build, the cluster has the GPUs) is checked by `orchestrator.preflight` and
`orchestrator.ray_session`.
"""
from .checks import check_method_knobs, check_search, check_unsupervised, search_metric
from .loading import MAX_DEPTH, MAX_FILE_BYTES, MAX_VALUES, apply_overrides, load_sweep, parse_yaml
from .schema import (KNN, PROTOCOLS, Classifier, DatasetSpec, EvalSpec, LinearProbe, ModelSpec, Normalization, Pair,
                     PaperRef, Resources, Schedule, Scheduler, Search, SearchParam, SpecError, Strict, Sweep,
                     TeacherSpec, count_teachers, count_trials, grid_cells, resolve_path)

__all__ = ["KNN", "MAX_DEPTH", "MAX_FILE_BYTES", "MAX_VALUES", "PROTOCOLS", "Classifier", "DatasetSpec", "EvalSpec",
           "LinearProbe", "ModelSpec", "Normalization", "Pair", "PaperRef", "Resources", "Schedule", "Scheduler",
           "Search", "SearchParam", "SpecError", "Strict", "Sweep", "TeacherSpec", "apply_overrides",
           "check_method_knobs", "check_search", "check_unsupervised", "count_teachers", "count_trials",
           "grid_cells", "load_sweep", "parse_yaml", "resolve_path", "search_metric"]
