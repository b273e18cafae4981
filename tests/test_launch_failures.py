"""launch_failures.py: Kubernetes pod state/events -> plain-language reason (table tests)."""

from __future__ import annotations

import pytest

from cnbi_spawner.launch_failures import (
    REASONS,
    diagnose,
    events_matter,
    failure,
    failure_html,
    failure_text,
    progress_message,
    relevant_events,
    tail_lines,
)


def pod(*, waiting=None, terminated=None, last=None, restarts=0, ready=False, conds=None):
    state = {}
    if waiting:
        state["waiting"] = {"reason": waiting, "message": f"{waiting} detail"}
    if terminated:
        state["terminated"] = {"reason": terminated[0], "exitCode": terminated[1]}
    if not state:
        state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    cs = {"name": "notebook", "state": state, "restartCount": restarts, "ready": ready}
    if last:
        cs["lastState"] = {"terminated": {"reason": last[0], "exitCode": last[1]}}
    return {"status": {"phase": "Pending", "containerStatuses": [cs], "conditions": conds or []}}


UNSCHED = [
    {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient cpu, 1 Insufficient memory.",
    }
]
EV_SCHED = {
    "reason": "FailedScheduling",
    "message": "0/1 nodes: 1 Insufficient cpu.",
    "type": "Warning",
}


@pytest.mark.parametrize(
    ("obj", "events", "timed_out", "want"),
    [
        (pod(waiting="ErrImagePull"), [], False, "ErrImagePull"),
        (pod(waiting="ImagePullBackOff"), [], False, "ImagePullBackOff"),
        (pod(waiting="InvalidImageName"), [], False, "ErrImagePull"),
        (pod(terminated=("OOMKilled", 137)), [], False, "OOMKilled"),
        # OOM wins over the crash loop it causes
        (
            pod(waiting="CrashLoopBackOff", last=("OOMKilled", 137), restarts=1),
            [],
            False,
            "OOMKilled",
        ),
        (
            pod(waiting="CrashLoopBackOff", last=("Error", 1), restarts=2),
            [],
            False,
            "CrashLoopBackOff",
        ),
        (pod(restarts=1, last=("Error", 1)), [], False, "CrashLoopBackOff"),
        (pod(conds=UNSCHED), [], False, "Unschedulable"),
        ({"status": {"phase": "Pending"}}, [EV_SCHED], False, "Unschedulable"),
        # scheduled after an earlier FailedScheduling: not unschedulable any more
        ({"status": {"phase": "Pending"}}, [EV_SCHED, {"reason": "Scheduled"}], False, None),
        (pod(waiting="CreateContainerConfigError"), [], False, "ContainerError"),
        (pod(terminated=("Error", 2)), [], False, "CrashLoopBackOff"),  # will be restarted
        (
            {**pod(terminated=("Error", 2)), "spec": {"restartPolicy": "Never"}},
            [],
            False,
            "ContainerError",
        ),
        (pod(terminated=("Completed", 0)), [], False, None),
        (pod(), [], False, None),
        (pod(), [], True, "Timeout"),
        (pod(waiting="ContainerCreating"), [], True, "Timeout"),
        (pod(waiting="ImagePullBackOff"), [], True, "ImagePullBackOff"),  # the cause wins
        (None, [], False, None),
        (None, [], True, "Timeout"),
        ({"status": "garbage"}, ["x", None], False, None),
        ({"status": {"containerStatuses": ["x", {"state": "y"}]}}, [], False, None),
    ],
)
def test_diagnose(obj, events, timed_out, want):
    got = diagnose(obj, events, timed_out=timed_out)
    assert (got.reason if got else None) == want
    if got:
        assert got.message == REASONS[want][0]
        assert got.terminal == REASONS[want][2]


def test_messages_are_plain_and_hints_name_the_reason():
    jargon = ("Kubernetes", "OOM", "BackOff", "pod", "container", "ErrImagePull")
    for reason, (message, hint, _) in REASONS.items():
        assert not any(word in message for word in jargon), reason
        assert message.endswith(".")
        assert hint
    assert "OOMKilled" in REASONS["OOMKilled"][1]
    assert "ImagePullBackOff" in REASONS["ImagePullBackOff"][1]
    assert "start_timeout" in REASONS["Timeout"][1]


def test_unschedulable_hint_names_the_missing_resources():
    f = diagnose(pod(conds=UNSCHED), [])
    assert f.hint.startswith("Insufficient cpu, memory: ")


def test_relevant_events_keeps_warnings_and_order():
    events = [
        {
            "lastTimestamp": f"2026-01-01T00:00:{i:02d}Z",
            "type": "Normal",
            "reason": f"N{i}",
            "message": "m",
        }
        for i in range(10)
    ]
    events.insert(
        0,
        {"lastTimestamp": "2026-01-01T00:00:05Z", "type": "Warning", "reason": "W", "message": "w"},
    )
    out = relevant_events(events, limit=3)
    assert [e["reason"] for e in out] == ["W", "N8", "N9"]
    assert relevant_events([], 3) == []
    assert relevant_events([{"eventTime": "t", "count": "x"}])[0] == {
        "time": "t",
        "type": "",
        "reason": "",
        "message": "",
        "count": 1,
    }


def test_tail_lines():
    assert tail_lines("a\n\nb\n c \n", 2) == ["b", " c"]
    assert tail_lines(None) == []
    assert len(tail_lines("x" * 2000)[0]) == 500


def test_failure_html_escapes_everything():
    f = failure("CrashLoopBackOff", "<script>alert(1)</script>")
    events = relevant_events([{"type": "Warning", "reason": "<b>", "message": "<img src=x>"}])
    page = failure_html(f, events, ["<svg onload=alert(1)>"])
    assert (
        "<script>" not in page and "<img" not in page and "<svg" not in page and "<b>" not in page
    )
    assert "&lt;svg onload=alert(1)&gt;" in page
    assert REASONS["CrashLoopBackOff"][0] in page and 'data-reason="CrashLoopBackOff"' in page
    assert failure_text(f).endswith("(reason: CrashLoopBackOff)")


@pytest.mark.parametrize(
    ("event", "want"),
    [
        ({"reason": "Pulling", "message": 'Pulling image "x"'}, "Downloading the course software…"),
        ({"reason": "BackOff", "message": 'Back-off pulling image "x"'}, "could not be downloaded"),
        ({"reason": "BackOff", "message": "Back-off restarting failed container"}, "went wrong"),
        ({"reason": "Failed", "message": "Error: ErrImagePull"}, "could not be downloaded"),
        ({"reason": "Failed", "message": "Error: failed to create task"}, "failed to start"),
        ({"reason": "Failed", "message": 'Failed to pull image "x"'}, "could not be downloaded"),
        ({"reason": "FailedScheduling", "message": "0/1"}, "Waiting for room"),
        ({"reason": "SomethingNew", "message": "x"}, None),
        ({}, None),
        ("junk", None),
    ],
)
def test_progress_message(event, want):
    got = progress_message(event)
    if want is None:
        assert got is None
    else:
        assert want in got


@pytest.mark.parametrize(
    ("pod", "want"),
    [
        (None, False),  # not created yet: no events of its own to read
        ({}, False),
        ({"spec": {}}, True),  # created, not scheduled: FailedScheduling may explain it
        (
            {"spec": {}, "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}},
            True,
        ),
        (
            {"spec": {}, "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}},
            False,
        ),
        ({"spec": {"nodeName": "node-1"}}, False),
        ({"spec": "garbage", "status": {"conditions": ["x", {"type": 3}]}}, True),
    ],
)
def test_events_matter_only_before_scheduling(pod, want):
    assert events_matter(pod) is want
