"""The operator adopts the TaskId a gateway chose (annotation capstan.dev/task-id), and only a well-formed one."""

from __future__ import annotations

import pytest

from capstan.api import CLOUD_RECORDING
from capstan.api.common import TASK_ID_ANNOTATION
from capstan.operator.reconcile.state import TaskMemory
from capstan.operator.reconcile.task import Plan, Task, _accept


def accepted(annotations: dict[str, str]) -> str:
    body = {"metadata": {"name": "t", "namespace": "ns", "uid": "u", "annotations": annotations},
            "spec": {"room": {"roomId": 1}}, "status": {}}
    plan = Plan()
    _accept(Task(CLOUD_RECORDING, body, TaskMemory(uid="u")), plan)
    return str(plan.status["taskId"])


def test_the_annotated_task_id_is_the_task_id() -> None:
    assert accepted({TASK_ID_ANNOTATION: "0f7d9522-a1a3-4517-b5ad-7a6eca000001"}) == \
        "0f7d9522-a1a3-4517-b5ad-7a6eca000001"


@pytest.mark.parametrize("bad", ["", "../../etc", "a/b", "short", "x" * 80])
def test_a_malformed_one_is_replaced_by_a_fresh_id(bad: str) -> None:
    task_id = accepted({TASK_ID_ANNOTATION: bad})
    assert task_id != bad and len(task_id) == 36
