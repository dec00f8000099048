"""Bulk tagging of large collections on Ray Data (`mltag-batch`): resumable, sharded, and
through the service's own model path (the contract's preprocessing, ONNX Runtime runner and
`Tagger`), so a row holds exactly the tags and scores `POST /tag` returns for that image.

- `sources`: SRC (directory, glob, manifest) -> (id, path) pairs.
- `storage`: local paths and filesystem URIs (s3://, gs://, ...) behind one small API.
- `tagging`: `ImageTagger`, the stateful callable of Ray Data's actor pool.
- `sinks`: atomic shards, the job file that makes reruns resume, what is already done.
- `job`: prepare (no Ray) and execute (Ray Data) one run; `summary`: progress and summary.
- `cli`: the `mltag-batch` command.

Imports neither `service` nor `model_training` (tests/test_boundaries.py).
"""
