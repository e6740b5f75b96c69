"""The layout the import contracts describe: parts by process boundary, nothing under a generic name."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from reprotrain.fingerprint import describe, env_digest
from tests.helpers import ROOT, fingerprint_dict

PARTS = {"cli", "job", "broker"}  # folders of reprotrain/ that are parts of their own, not core
GENERIC = ("worker", "service", "examples", "bench", "deploy", "tests")


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_core_contract_names_every_core_module() -> None:
    """Each module of reprotrain/ is a named part or listed as core, so no new module escapes the rule."""
    core = next(c for c in _contracts() if c["name"].startswith("Core"))
    listed = {m.removeprefix("reprotrain.") for m in core["source_modules"]}
    found = {p.stem for p in (ROOT / "reprotrain").iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    found |= {p.name for p in (ROOT / "reprotrain").iterdir() if (p / "__init__.py").exists()}
    assert found - PARTS <= listed, (
        f"add to the core contract or make a part: {sorted(found - PARTS - listed)}"
    )
    assert "reprotrain" in core["source_modules"] and not listed & PARTS


def test_nothing_of_ours_has_a_generic_top_level_name() -> None:
    """From a neutral directory, `worker`, `service`, `examples`, … are not importable at all."""
    code = f"import importlib.util as u; print([n for n in {GENERIC!r} if u.find_spec(n)])"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_building_the_api_app_imports_no_torch(tmp_path) -> None:
    """The API app, built as `reprotrain api` builds it, leaves torch unimported (its image has none)."""
    code = (
        "import sys; from reprotrain.settings import Settings; from reprotrain.service.app import create_app;"
        f"create_app(Settings(data_dir={str(tmp_path)!r})); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_labels_come_from_the_fingerprint_model() -> None:
    """A key is labelled by the field it names; what names a machine is neither a cause nor digested."""
    assert (describe("determinism.num_threads").name, describe("determinism.num_threads").cause) == (
        "thread count",
        True,
    )
    assert describe("determinism.allow_tf32.matmul").name == "determinism setting"
    assert describe("cuda.gpus.0.name").name == "GPU model"
    for key in ("host.hostname", "cpu.count", "cuda.gpus.0.uuid", "image.build_date"):
        assert not describe(key).cause and not describe(key).digest, key
    assert describe("no.such.key").name == "other"


def test_env_digest_ignores_what_names_a_machine() -> None:
    """Another host and CPU count: same env digest; another thread count: a different one."""
    base = fingerprint_dict()
    other_host = fingerprint_dict(host={"hostname": "h9", "pid": 1}, cpu={**base["cpu"], "count": 64})
    assert env_digest(base) == env_digest(other_host)
    assert env_digest(base) != env_digest(
        fingerprint_dict(determinism={**base["determinism"], "num_threads": 2})
    )


def test_the_worker_edge_leaves_torch_to_the_fork_server() -> None:
    """Importing the Celery worker and the job supervisor imports no torch: only the fork server does."""
    code = "import sys, reprotrain.worker.main, reprotrain.job.supervisor; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def _leaf_keys(model: type, prefix: str = "") -> list[str]:
    from reprotrain.fingerprint import _models_in

    keys = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        inner = _models_in(field.annotation)
        if not inner:
            keys.append(key)
        for sub in inner:
            keys += _leaf_keys(sub, key + (".0." if "list" in str(field.annotation) else "."))
    return keys


def test_every_fingerprint_key_is_labelled() -> None:
    """Each key a fingerprint can have reads as a named cause or as informational, never as 'other'."""
    from reprotrain.fingerprint import Fingerprint

    keys = _leaf_keys(Fingerprint)
    assert "cuda.gpus.0.uuid" in keys and "determinism.num_threads" in keys
    assert [k for k in keys if describe(k).name == "other"] == []


def test_env_digest_is_the_environment_only() -> None:
    """The job's own spec, bundle and inputs are not in the fingerprint, so not in env_digest."""
    from reprotrain.fingerprint import Fingerprint

    assert not {"inputs", "bundle", "spec"} & set(Fingerprint.model_fields)


def test_no_script_folder_shadows_the_standard_library() -> None:
    """`python bench/service.py` puts bench/ first on sys.path: a bench/bisect.py there was imported
    for the standard library's `bisect` (by `random`) and every bench run as a path failed."""
    import sys

    for folder in ("bench", "tests/gpu", "deploy", "examples"):
        names = {p.stem for p in (ROOT / folder).glob("*.py")}
        assert not names & sys.stdlib_module_names, f"{folder}/ shadows the standard library"
