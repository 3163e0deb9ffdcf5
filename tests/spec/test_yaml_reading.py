"""fanflow reads YAML in one bounded pass of its own over the parser's events; what it builds
must be exactly what PyYAML's safe loader builds, for any document both accept."""

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fanflow.spec.errors import SpecError
from fanflow.spec.positions import load_yaml_with_positions

ROOT = Path(__file__).resolve().parents[2]

TRICKY = [
    "a: 010\nb: 0x1F\nc: 1_000\nd: 1:30\ne: 0b101\nf: -7\ng: +3\nh: 0\n",  # YAML 1.1 integers
    "a: 1.5\nb: .inf\nc: -.Inf\nd: 1e3\ne: 6.8523015e+5\nf: 190:20:30.15\n",
    "a: yes\nb: No\nc: on\nd: OFF\ne: true\nf: ~\ng: null\nh: ''\ni: '010'\nj: \"yes\"\n",
    "when: 2024-01-02\nat: 2001-12-14t21:59:43.10-05:00\n",
    "base: &base {retries: 2, timeout: 5m}\nstep:\n  <<: *base\n  timeout: 1m\n",
    "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n",
    "list: &l [1, 2]\nagain: *l\nnested: {deep: [*l, *l]}\n",
    "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\nplain: a b c\n",
    "'quoted key': 1\n\"double\": 2\n? explicit\n: 3\n",
    "a: !!str 123\nb: !!int '7'\nc: !!float 1\nd: !!bool yes\ne: !!null ''\n",
    "- 1\n- [2, 3]\n- {a: [4, {b: 5}]}\n",
    "scalar at the top\n",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_documents_read_as_pyyaml_reads_them(text):
    data, _ = load_yaml_with_positions(text, "t.yaml")
    assert data == yaml.safe_load(text)


def test_every_workflow_file_in_the_repository_reads_as_pyyaml_reads_it():
    files = [p for p in ROOT.glob("**/*.y*ml") if ".venv" not in p.parts and "corpus" not in p.parts]
    assert len(files) >= 20
    for path in files:
        text = path.read_text(encoding="utf-8")
        try:
            expected = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        try:
            data, _ = load_yaml_with_positions(text, str(path))
        except SpecError:
            continue  # duplicate keys, for one: refused on purpose
        assert data == expected, path


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=12), st.dates())
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=25)


@settings(max_examples=150, deadline=None)
@given(values, st.booleans())
def test_any_value_pyyaml_writes_reads_back_the_same(value, flow_style):
    text = yaml.safe_dump(value, default_flow_style=flow_style, allow_unicode=True)
    data, _ = load_yaml_with_positions(text, "t.yaml")
    assert data == yaml.safe_load(text)


def test_a_plain_equals_sign_is_text():
    # PyYAML's safe loader has no constructor for YAML 1.1's `=` value key and refuses it.
    assert load_yaml_with_positions("v: =\n", "t.yaml")[0] == {"v": "="}


def test_positions_name_keys_and_nested_items():
    text = "name: t\nsteps:\n  a:\n    with:\n      xs:\n        - {k: 1}\n        - {k: 2}\n"
    _, positions = load_yaml_with_positions(text, "t.yaml")
    assert positions.locate(("steps", "a", "with", "xs", 1, "k")) == (7, 12)
    assert positions.locate(("steps", "a", "with", "missing")) == (4, 5)
    assert positions.locate(()) == (1, 1)
