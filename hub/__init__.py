"""The Hub side of the detector: save, describe, push and pull models.

- `hub/card.py`: model cards and the Space header (pure functions, dict in, markdown out).
- `hub/push.py`: push a model folder or the Space in one commit (`python -m hub push ...`, `push-space`).
- `hub/pull.py`: where the app gets its models: the Hub, else the cache, else the embedded folders
  (`python -m hub pull`); hub/models.json lists them.

Run `python -m hub --help` for the command line. Nothing is imported here, so `import hub.card` stays cheap.
"""
