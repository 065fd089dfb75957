"""The recording suite's room, task and callback fixtures (defined beside the first tests that
used them), shared by every real-stack recorder test module of this directory."""

from tests.recorder.test_recording import receiver, room, tasks  # noqa: F401
