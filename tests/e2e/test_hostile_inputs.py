"""Every case of ``hostile_inputs.yaml`` against ONE real stack, over plain HTTP.

The stack: production-config hub + CHP + ``cnbi`` service on a stub-runtime dev cluster,
with a link-signing key (so signature checks run first and the test signs its hostile
parameters to reach the validation behind them) and rate limits off (200 requests from one
address are the test, not an attack to throttle).

Each case must get a 4xx (the exact code when the case names one): never a 5xx, never a
redirect into a launch; no user, pod or CustomNBImage appears; the payload is never echoed
unescaped in an HTML/text body; no injected header or cookie.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode

import aiohttp
import pytest
import pytest_asyncio
import yaml
from e2e_stack import AUTHOR, NS, start_stack

from cnbi_spawner.signing import sign_params

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

CORPUS = Path(__file__).with_name("hostile_inputs.yaml")
KEY = "e2e-hostile-corpus-signing-key-0123456789"
REPEAT = re.compile(r"@@(list:)?(.+?)\*(\d+)@@", re.S)
HTML_SPECIAL = re.compile(r"[<>\"'\r\n]")
#: fragments that would only appear in a body if some payload went out unescaped
NEVER = ["<script>alert", "<img src=x onerror", "<svg/onload", "<iframe src=javascript", "<b>x</b>"]


def expand(value):
    """``@@text*N@@`` -> text repeated N times; ``@@list:text*N@@`` -> [text] * N."""
    if isinstance(value, str):
        whole = REPEAT.fullmatch(value)
        if whole and whole.group(1):
            return [whole.group(2)] * int(whole.group(3))
        return REPEAT.sub(lambda m: m.group(2) * int(m.group(3)), value)
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {expand(k): expand(v) for k, v in value.items()}
    return value


def load_cases() -> list[dict]:
    return [expand(case) for case in yaml.safe_load(CORPUS.read_text())]


CASES = load_cases()


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*strings(k), *strings(v))]
    return []


def signed(params: dict, how) -> dict:
    now = int(time.time())
    if how is False:
        return params
    if how == "expired":
        return sign_params(params, KEY, now - 60)
    if how == "far-future":
        return sign_params(params, KEY, now + 10 * 365 * 86400)
    if how == "wrong-key":
        return sign_params(params, KEY + "-other", now + 600)
    out = sign_params(params, KEY, now + 600)
    if how == "upper":
        out["sig"] = out["sig"].upper()
    return out


def tmplogin_query(case: dict) -> str:
    if "query" in case:
        query = case["query"]
        pairs = parse_qsl(query, keep_blank_values=True, errors="replace")
        keys = [k for k, _ in pairs]
        if case.get("raw_sign", True) and len(keys) == len(set(keys)) and len(query) < 8000:
            extra = signed(dict(pairs), True)
            query += "&" + urlencode({"exp": extra["exp"], "sig": extra["sig"]})
        return query
    params = signed(dict(case["params"]), case.get("sign", True))
    if case.get("sign") == "tamper":
        params.update(case["tamper"])
    return urlencode(params)


def payloads(case: dict) -> list[str]:
    """The case's inputs that would be dangerous if echoed verbatim."""
    found = strings(case.get("params", {})) + strings(case.get("json", {}))
    if "query" in case:
        found += [v for kv in parse_qsl(case["query"], errors="replace") for v in kv]
    if "body" in case:
        found.append(case["body"])
    found += [case.get("path", "")]
    return [s for s in found if HTML_SPECIAL.search(s) and len(s) > 2]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def corpus_stack(tmp_path_factory):
    env = {
        "CNBI_LINK_SIGNING_KEY": KEY,
        "CNBI_PER_CLIENT_RATE": "0",
        "CNBI_GLOBAL_RATE": "0",
    }
    stack = await start_stack(tmp_path_factory.mktemp("e2e-hostile"), runtime="stub", env=env)
    try:
        status, _ = await stack.api("POST", f"/users/{AUTHOR}")
        assert status in (201, 409)
        scopes = ["custom:cnbi:builds", "access:services!service=cnbi"]
        status, body = await stack.api("POST", f"/users/{AUTHOR}/tokens", {"scopes": scopes})
        assert status == 201, body
        stack.author_token = body["token"]
        async with aiohttp.ClientSession() as session:
            stack.session = session
            yield stack
    finally:
        await stack.stop()


async def send(stack, case: dict) -> tuple[int, dict, str]:
    target = case["target"]
    auth = {"Authorization": f"token {stack.author_token}"}
    kw: dict = {"allow_redirects": False, "timeout": aiohttp.ClientTimeout(total=30)}
    method = case.get("method", "GET")
    if target == "tmplogin":
        url = f"{stack.url}/hub/tmplogin?{tmplogin_query(case)}"
    elif target == "catalog":
        url = f"{stack.svc}?{urlencode(case['params'])}"
        kw["headers"] = auth
    elif target == "images-api":
        url = f"{stack.svc}api/images/{quote(case['path'], safe='')}"
        kw["headers"] = auth
    elif target == "builds-get":
        url = f"{stack.svc}api/builds/{case['path']}"
        kw["headers"] = auth
    elif target == "builds-api":
        method = "POST"
        url = f"{stack.svc}api/builds"
        if "json" in case:
            data = json.dumps(case["json"]).encode()
        elif "body_hex" in case:
            data = bytes.fromhex(case["body_hex"])
        else:
            data = case["body"].encode("utf-8", "surrogatepass")
        ctype = case.get("content_type", "application/json")
        kw["headers"] = {**auth, "Content-Type": ctype}
        kw["data"] = data
    else:
        raise AssertionError(f"unknown target {target!r}")
    async with stack.session.request(method, url, **kw) as r:
        body = (await r.read()).decode("utf-8", "replace")
        return r.status, dict(r.headers.items()), body


def custom_images(stack) -> int:
    return len(stack.cluster.list("meteor.zone/v1alpha1", "customnbimages", namespace=NS))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
async def test_hostile_input_is_refused_cleanly(corpus_stack, case):
    stack = corpus_stack
    users_before = {u["name"] for u in await stack.users()}
    pods_before = len(stack.pods())
    crs_before = custom_images(stack)

    status, headers, body = await send(stack, case)

    assert 400 <= status < 500, f"{case['id']}: {status}\n{body[:800]}"
    if "status" in case:
        assert status == case["status"], f"{case['id']}: {status}\n{body[:800]}"
    ctype = headers.get("Content-Type", "")
    if "json" not in ctype:  # HTML/text: nothing dangerous echoed verbatim
        for payload in payloads(case):
            assert payload not in body, f"{case['id']}: reflected unescaped: {payload[:80]!r}"
        for fragment in NEVER:
            assert fragment not in body, f"{case['id']}: {fragment!r} in body"
    else:
        json.loads(body)  # well-formed JSON, not an HTML page labelled JSON
    assert "Traceback" not in body
    for name, value in headers.items():
        assert "injected" not in f"{name}: {value}".lower(), f"{case['id']}: header {name}"
    users_after = {u["name"] for u in await stack.users()}
    assert users_after == users_before, f"{case['id']}: users {users_after - users_before}"
    assert len(stack.pods()) == pods_before
    assert custom_images(stack) == crs_before


async def test_corpus_is_big_and_well_formed():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)
    targets = {c["target"] for c in CASES}
    assert targets == {"tmplogin", "catalog", "images-api", "builds-api", "builds-get"}
