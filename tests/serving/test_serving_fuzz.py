"""Requests generated from the Open Inference Protocol's own OpenAPI document (KServe's
``open_inference_rest.yaml``, Apache-2.0, kept beside this file as published) by
schemathesis: bodies that fit the schema and bodies that do not, to a model server and to
the gateway. Whatever comes, the answer is never a 5xx, and every error has the protocol's
``{"error": "..."}`` shape.

The document writes path parameters as ``${MODEL_NAME}``; they are read as OpenAPI's
``{MODEL_NAME}``. Most requests get the served model's real name and version, so that they
reach the body's checks rather than stopping at 404; the others keep the generated ones.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from fanflow.serving.gateway import create_gateway_app
from fanflow.serving.model_server import create_model_app
from tests.serving.serving_helpers import wait_ready
from tests.serving.serving_predictors import BrightnessTagger, load_tagger

DOCUMENT = Path(__file__).with_name("open_inference_rest.yaml")
# Requests per operation: 1,350 to a model server and 700 to the gateway, 2,050 in all.
EXAMPLES = {"model server": {"infer": 1200, "other": 150}, "gateway": {"infer": 650, "other": 50}}


def load_schema():
    raw = yaml.safe_load(DOCUMENT.read_text().replace("${", "{"))
    return schemathesis.openapi.from_dict(raw)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from fanflow.serving.server import ServerThread

    path = BrightnessTagger().save(tmp_path_factory.mktemp("fuzz") / "tagger.json")
    started = [ServerThread(create_model_app(path, "bright", loader=load_tagger)).start()]
    wait_ready(started[0].url)
    version = httpx.get(started[0].url + "/v2/models/bright").json()["versions"][0]
    started.append(ServerThread(create_gateway_app([{"url": started[0].url, "model": "bright"}])).start())
    yield {"model server": (started[0].url, "bright", version), "gateway": (started[1].url, "ensemble", None)}
    for server in reversed(started):
        server.stop()


OPERATIONS = [(op.ok().method.upper(), op.ok().path) for op in load_schema().get_all_operations()]


def fuzz(api, url: str, name: str, version: str | None, examples: int) -> list[int]:
    """Send ``examples`` generated requests (fewer when the operation has few distinct
    ones) for ``api``; the statuses answered."""
    sent: list[int] = []
    cases = st.one_of(
        api.as_strategy(generation_mode=GenerationMode.POSITIVE),
        api.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=cases, real_name=st.sampled_from([True, True, True, False]))
    def check(case, real_name):
        if real_name and case.path_parameters:
            case.path_parameters = {"MODEL_NAME": name, "MODEL_VERSION": version or ""}
            if version is None:  # the gateway's model has no versions: use the plain path
                case.path = case.path.replace("/versions/{MODEL_VERSION}", "")
        response = case.call(base_url=url, timeout=30)
        sent.append(response.status_code)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
        if response.status_code >= 400:
            assert isinstance(response.json().get("error"), str), response.text[:300]

    check()
    return sent


# Generating over a thousand schema-valid bodies is CPU-bound: on a shared machine it can
# outlast the suite-wide 300 s timeout without anything hanging.
@pytest.mark.timeout(900)
@pytest.mark.parametrize("target, at_least", [("model server", 1350), ("gateway", 700)])
def test_no_generated_request_gets_a_5xx(servers, target, at_least):
    url, name, version = servers[target]
    statuses = []
    for method, path in OPERATIONS:
        kind = "infer" if path.endswith("/infer") else "other"
        statuses += fuzz(load_schema()[path][method], url, name, version, EXAMPLES[target][kind])
    assert len(statuses) >= at_least
    assert 200 in statuses and 400 in statuses  # both valid and refused requests reached the server
