"""The operator's reconcile, split by concern (CloudNativePG's cluster_create / _status / _delete).

`task.reconcile` is the sequencer kopf's handlers call on every watch event of a task or of its
worker Pod (and on a slow safety-net timer). Each concern is its own module: `admit` (the quota,
once per task), `worker` (the Pod of each attempt), `callbacks` (the outbox), `finish` (the end
and the clean-up). `state` holds what one operator process remembers between events.
"""
