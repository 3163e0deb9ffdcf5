"""The rules the miniature Argo controller applies, checked against the expectations of
Argo's own tests at the tags named, and the behaviours that made values travel outside Argo
(each was a way an exported workflow failed or differed from a local run)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.kube import argo_rules as rules
from tests.kube.argo_rules import VERSIONS, ArgoVersion

V3_5_10, V3_5_11, V3_6, V3_7_10, V3_7_11, V4_0_2, V4_1 = (
    ArgoVersion.parse(v) for v in ("v3.5.10", "v3.5.11", "v3.6.19", "v3.7.10", "v3.7.11", "v4.0.2", "v4.1.2")
)


# workflow/controller/operator_aggregation_test.go, TestAggregatedJsonValueList (v3.5.11 to v4.1.2)
@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1"], '["1"]'),
        (["1", "2"], '["1","2"]'),
        (["foo", "bar"], '["foo","bar"]'),
        (['["1"]', "2"], '["[\\"1\\"]","2"]'),
        (['{"foo":"1"}', "2"], '["{\\"foo\\":\\"1\\"}","2"]'),
        (['["1"]', '["2"]'], '[["1"],["2"]]'),
        ([' ["1"]', '["2"] '], '[["1"],["2"]]'),
        (['{"number":"1"}', '{"number":"2"}'], '[{"number":"1"},{"number":"2"}]'),
        (['[{"foo":"apple", "bar":"pear"}]'], '[[{"bar":"pear","foo":"apple"}]]'),
    ],
)
def test_aggregation_from_v3_5_11_decodes_only_lists_of_json_objects_or_lists(values, expected):
    for version in VERSIONS:
        if version.decodes_aggregates:
            assert rules.aggregate(values, version) == expected, version


def test_aggregation_before_v3_5_11_hands_strings_whatever_they_hold():
    assert rules.aggregate(['{"number":"1"}', '{"number":"2"}'], V3_5_10) == (
        '["{\\"number\\":\\"1\\"}","{\\"number\\":\\"2\\"}"]'
    )


def test_a_fan_in_of_numbers_arrives_as_strings_on_every_version():
    """A sum over ``${square[*]}`` met ["1", "4"]: TypeError: unsupported operand 'int' and 'str'."""
    for version in VERSIONS:
        assert json.loads(rules.aggregate(["1", "4"], version)) == ["1", "4"]


def test_decoded_objects_are_re_encoded_by_go():
    """Keys sorted, 1.0 becomes 1, integers past 2**53 rounded, JSON escapes undone."""
    manifest = '{"z":1.0,"a":9007199254740993,"b":"\\u0024{x}","c":12345678901234567891}'
    assert (
        rules.aggregate([manifest], V3_6)
        == '[{"a":9007199254740992,"b":"${x}","c":12345678901234567000,"z":1}]'
    )
    assert json.loads(rules.aggregate([manifest], V3_5_10)) == [manifest]


# pkg/apis/workflow/v1alpha1/item_test.go, TestItem and testItemStringTable (v3.4.18 to v4.1.2)
@pytest.mark.parametrize(
    ("raw", "kind", "text"),
    [
        ("0", "number", "0"),
        ("3.141", "number", "3.141"),
        ("true", "bool", "true"),
        ('"hello"', "string", "hello"),
        ('"hell%test%o"', "string", "hell%test%o"),
        ('{"val":"123"}', "map", '{"val":"123"}'),
        ('["1","2","3","4","5"]', "list", '["1","2","3","4","5"]'),
        ('"<&>"', "string", "<&>"),
        ('["<&>"]', "list", '["<&>"]'),
        ('{"foo":"<&>"}', "map", '{"foo":"<&>"}'),
        ("1.1", "number", "1.1"),
    ],
)
def test_items_have_argos_types_and_text(raw, kind, text):
    assert rules.item_type(raw) == kind
    assert rules.item_text(raw) == text


def test_string_items_that_read_as_other_types_arrive_bare():
    """``{{item}}`` of "1", "true", "null" is 1, true, null: the text of a number, a boolean
    and null, which a pod that decodes JSON took for them."""
    for word in ("1", "true", "null"):
        assert rules.item_values(json.dumps(word))[0]["item"] == word
    assert rules.item_values("1")[0]["item"] == rules.item_values('"1"')[0]["item"]
    assert rules.item_values('"x\\"y"')[0]["item"] == 'x\\"y'  # the escape stays


def test_items_of_a_sequence_are_decimal_strings_and_name_their_nodes():
    items = rules.sequence(count="3")
    assert items == ['"0"', '"1"', '"2"']
    assert [rules.node_name("square", i, rules.item_values(raw)[1]) for i, raw in enumerate(items)] == [
        "square(0:0)", "square(1:1)", "square(2:2)",
    ]  # fmt: skip
    assert rules.sequence(count="0") == []
    assert rules.item_values('{"m":"cnn(v2)"}')[1] == "m:cnnv2"  # generateNodeName drops parentheses


def test_substitution_writes_values_through_go_quoting_into_json():
    assert rules.replace('{"a":"{{x}}"}', {"x": 'q"\n\t'}) == '{"a":"q\\"\\n\\t"}'
    with pytest.raises(rules.TemplateError, match="invalid JSON"):
        rules.replace('{"a":"{{x}}"}', {"x": "bell\x07"})  # Go's \a is not JSON
    assert rules.replace('{"a":"{{y}}"}', {}) == '{"a":"{{y}}"}'
    with pytest.raises(rules.TemplateError, match="failed to resolve"):
        rules.replace('{"a":"{{y}}"}', {}, allow_unresolved=False)


def test_a_missing_task_output_requeues_the_workflow_from_v3_7_11_and_v4_0_2():
    """A quorum check that read the aggregated output of branches that all failed waited
    there for ever (no branch succeeded, so the output never existed)."""
    requeuing = [v for v in VERSIONS if v.strict_references]
    assert requeuing == [V3_7_11, ArgoVersion.parse("v3.7.18"), V4_0_2, V4_1]
    text = '{"value":"{{tasks.train.outputs.parameters.manifest}}"}'
    with pytest.raises(rules.MissingVariable):
        rules.replace(text, {}, strict_prefixes=("tasks", "steps"))
    assert "{{tasks.train" in rules.replace(text, {})  # earlier: left as it is, and the pod failed


def test_depends_and_when():
    results = {
        "a": {r: r == "Succeeded" for r in rules.RESULTS},
        "b": {r: r == "Failed" for r in rules.RESULTS},
    }
    assert rules.evaluate_depends("a && (b.Succeeded || b.Failed || b.Errored)", results)
    assert not rules.evaluate_depends("a.Succeeded && b.Succeeded", results)
    assert rules.depends_tasks("(b.Succeeded || b.Failed) && a-x.Succeeded") == ["a-x", "b"]
    assert rules.should_execute("(true) && (true)") and not rules.should_execute("(true) && (false)")
    assert rules.should_execute("'fast' == fast")  # govaluate reads bare words as strings here
    with pytest.raises(rules.TemplateError, match="Expected boolean"):
        rules.should_execute("3")


def test_retries_and_their_backoff():
    assert rules.retry_allowed("asInt(lastRetry.exitCode) != 3", 1)
    assert not rules.retry_allowed("asInt(lastRetry.exitCode) != 3", 3)
    assert rules.backoff_wait(1, 2, 9, 300, V3_7_10) == 300
    assert rules.backoff_wait(1, 2, 9, 300, V3_6) == 512  # no cap before v3.7.0


def test_kubernetes_rewrites_dollars_in_container_arguments():
    assert rules.kubernetes_expand("cost: $$5 and $(HOME)", {}) == "cost: $5 and $(HOME)"
    assert rules.kubernetes_expand("$(HOME)/x", {"HOME": "/root"}) == "/root/x"


def test_linux_refuses_a_command_line_argument_past_128_kib():
    """A fan-in list passed as one argument: about 30 branches of 4.4 KB outputs."""
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["true", "x" * (30 * 4400)], check=False)
