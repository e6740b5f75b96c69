"""Job spec v1: validation naming the field, canonical digest."""

from __future__ import annotations

import pytest

from reprotrain.errors import SpecInvalid
from reprotrain.spec import MAX_SEED, load_spec, loads_spec, parse_spec
from tests.helpers import base_spec


def test_valid_spec_fills_defaults() -> None:
    """A minimal function-mode spec parses and gets every default."""
    spec = parse_spec({"entrypoint": "pkg.mod:train", "seed": 1})
    assert spec.mode == "function"
    assert spec.determinism.policy == "strict"
    assert spec.track.digest_every == 10
    assert spec.timeout_s == 3600


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"seed": -1}, "seed"),
        ({"seed": MAX_SEED + 1}, "seed"),
        ({"seed": "12"}, "seed"),
        ({"seed": True}, "seed"),
        ({"determinism": {"policy": "sometimes"}}, "determinism.policy"),
        ({"determinism": {"policy": "strict", "num_threads": 0}}, "determinism.num_threads"),
        ({"determinism": {"policy": "strict", "knob": 1}}, "determinism.knob"),
        ({"device": "tpu"}, "device"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"entrypoint": "not a module"}, "entrypoint"),
        ({"bundle": "md5:abc"}, "bundle"),
        ({"track": {"digest_every": 0}}, "track.digest_every"),
        ({"inputs": {"train": {}}}, "inputs.train.path"),
        ({"params": {"x": float("nan")}}, "params"),
    ],
)
def test_bad_values_name_the_field(change: dict, field: str) -> None:
    """Each bad value is refused with the offending field named."""
    with pytest.raises(SpecInvalid) as e:
        parse_spec(base_spec(**change))
    assert e.value.field == field


def test_entrypoint_and_command_are_exclusive() -> None:
    """Both or neither of entrypoint/command is refused, naming the fields."""
    with pytest.raises(SpecInvalid, match=r"exactly one of 'entrypoint' or 'command'.*both"):
        parse_spec(base_spec(command=["python", "t.py"]))
    spec = base_spec()
    del spec["entrypoint"]
    with pytest.raises(SpecInvalid, match="neither"):
        parse_spec(spec)


def test_seed_required_unless_policy_off() -> None:
    """A seed is required for seeded/strict/warn, optional for off."""
    spec = base_spec()
    del spec["seed"]
    with pytest.raises(SpecInvalid) as e:
        parse_spec(spec)
    assert e.value.field == "seed"
    assert parse_spec({**spec, "determinism": {"policy": "off"}}).seed is None


def test_digest_ignores_key_order_and_explicit_defaults() -> None:
    """The same spec written differently has the same digest; a changed value does not."""
    a = parse_spec({"entrypoint": "m:f", "seed": 1, "params": {"a": 1, "b": 2}})
    b = parse_spec({"params": {"b": 2, "a": 1}, "seed": 1, "entrypoint": "m:f", "device": "auto"})
    c = parse_spec({"entrypoint": "m:f", "seed": 2, "params": {"a": 1, "b": 2}})
    assert a.digest == b.digest
    assert a.digest != c.digest


def test_spec_is_frozen() -> None:
    """A parsed spec cannot be changed after the fact."""
    spec = parse_spec(base_spec())
    with pytest.raises(ValueError, match="frozen"):
        spec.seed = 5  # type: ignore[misc]


def test_load_yaml_and_json(tmp_path) -> None:
    """YAML and JSON files load to the same spec; broken files name the line."""
    (tmp_path / "s.yaml").write_text("entrypoint: m:f\nseed: 3\n")
    (tmp_path / "s.json").write_text('{"entrypoint": "m:f", "seed": 3}')
    assert load_spec(tmp_path / "s.yaml").digest == load_spec(tmp_path / "s.json").digest
    with pytest.raises(SpecInvalid, match="line 2"):
        loads_spec("a: [1,\nb: }")
    with pytest.raises(SpecInvalid, match="cannot read spec file"):
        load_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecInvalid, match="must be a mapping"):
        parse_spec([1, 2])


def test_compare_section_is_optional_and_checked() -> None:
    """Without `compare` the canonical spec (and its digest) has no such key; a bad pattern is named."""
    plain = parse_spec({"entrypoint": "m:f", "seed": 1})
    assert "compare" not in plain.canonical()
    with_section = parse_spec({"entrypoint": "m:f", "seed": 1, "compare": {"volatile": ["out/*"]}})
    assert with_section.canonical()["compare"]["volatile"] == ["out/*"]
    assert with_section.digest != plain.digest
    with pytest.raises(SpecInvalid) as e:
        parse_spec({"entrypoint": "m:f", "seed": 1, "compare": {"noise": ["(unclosed"]}})
    assert e.value.field == "compare.noise" and "not a regular expression" in e.value.message


def test_preflight_and_bisect_leave_digests_of_specs_without_them_unchanged() -> None:
    from reprotrain.spec import parse_spec

    plain = parse_spec({"entrypoint": "m:f", "seed": 1})
    assert "preflight" not in plain.canonical()["determinism"] and "bisect" not in plain.canonical()
    checked = parse_spec({"entrypoint": "m:f", "seed": 1, "determinism": {"preflight": 3}})
    assert checked.canonical()["determinism"]["preflight"] == 3 and checked.digest != plain.digest
    b = parse_spec({"entrypoint": "m:f", "seed": 1, "bisect": {"until_step": 4}})
    assert b.canonical()["bisect"] == {"a": None, "b": None, "until_step": 4}


def test_preflight_needs_python_it_can_record() -> None:
    import pytest

    from reprotrain.errors import SpecInvalid
    from reprotrain.spec import parse_spec

    with pytest.raises(SpecInvalid) as e:
        parse_spec({"command": ["sh", "-c", "python t.py"], "seed": 1, "determinism": {"preflight": 2}})
    assert e.value.field == "determinism.preflight" and "python SCRIPT.py" in e.value.message
    assert parse_spec({"command": ["python", "t.py"], "seed": 1, "determinism": {"preflight": 2}})
    with pytest.raises(SpecInvalid) as e:
        parse_spec({"entrypoint": "m:f", "seed": 1, "determinism": {"preflight": 0}})
    assert e.value.field == "determinism.preflight"
