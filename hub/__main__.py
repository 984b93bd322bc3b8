"""Command line for the Hub side of the project.

    python -m hub push FOLDER --repo-id user/name [--private] [--revision BRANCH] [--commit-message MSG]
                              [--overwrite-card]
    python -m hub push-space --space-id user/deepfake-detector [--root .] [--private]
    python -m hub space-readme [--root .]       # refresh the Space header of README.md in place
    python -m hub pull [--config models/models.json]
    python -m hub set-thresholds FOLDER [FOLDER ...]    # metrics.json's verdict thresholds into config.json

Exit codes: 0 done; 2 a mistake to fix (one `hub: error: ...` line says what to do); 1 the Hub failed or
could not be reached, or (pull) a model resolved nowhere. The token is never printed.
"""

import argparse
import logging
import sys
from pathlib import Path

PROG = "hub"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Push models and the Space to the Hub, pull models.")
    commands = parser.add_subparsers(dest="command", required=True)

    push = commands.add_parser("push", help="upload a trained model folder to a model repo in one commit")
    push.add_argument("folder", type=Path, help="output folder of a training run (config.json, model.safetensors)")
    push.add_argument("--repo-id", required=True, help="Hub model repo, 'username/model-name'")
    push.add_argument("--private", action="store_true", help="create the repo private (ignored if it exists)")
    push.add_argument("--revision", help="branch to commit to (created if missing); default: main")
    push.add_argument("--commit-message", help="commit title; default: 'Upload <folder> model'")
    push.add_argument("--overwrite-card", action="store_true",
                      help="regenerate README.md from metrics.json even if the folder has one")

    space = commands.add_parser("push-space", help="upload the app and what it imports to a Gradio Space")
    space.add_argument("--space-id", required=True, help="Hub Space, 'username/space-name'")
    space.add_argument("--root", type=Path, default=Path("."), help="project root (default: current folder)")
    space.add_argument("--private", action="store_true", help="create the Space private (ignored if it exists)")
    space.add_argument("--commit-message", help="commit title; default: 'Update the Space'")

    readme = commands.add_parser("space-readme", help="refresh the Space header of README.md in place")
    readme.add_argument("--root", type=Path, default=Path("."), help="project root (default: current folder)")

    thresholds = commands.add_parser("set-thresholds", help="write each folder's verdict thresholds (from its "
                                     "metrics.json) into its config.json, where the app and pipeline() read them")
    thresholds.add_argument("folders", nargs="+", type=Path, help="model folders written by python -m train")

    pull = commands.add_parser("pull", help="resolve the app's models and print where each one came from")
    pull.add_argument("--config", type=Path, default=None, help="models list (default: models/models.json)")
    return parser


def _push(args) -> int:
    from hub.push import push_model

    result = push_model(args.folder, args.repo_id, private=args.private, revision=args.revision,
                        commit_message=args.commit_message, overwrite_card=args.overwrite_card)
    if result.card_written:
        print(f"wrote the model card {args.folder / 'README.md'} from metrics.json")
    else:
        print(f"kept the existing model card {args.folder / 'README.md'} (--overwrite-card to regenerate it)")
    print(f"pushed {len(result.files)} files to {result.url}")
    print(f"commit {result.commit_sha}")
    return 0


def _push_space(args) -> int:
    from hub.push import push_space

    result = push_space(args.root, args.space_id, private=args.private, commit_message=args.commit_message)
    print(f"pushed {len(result.files)} files to {result.url}")
    print(f"commit {result.commit_sha}")
    return 0


def _space_readme(args) -> int:
    from hub.push import space_readme

    readme = args.root / "README.md"
    readme.write_text(space_readme(args.root))
    print(f"updated the Space header of {readme}")
    return 0


def _pull(args) -> int:
    from deepfake_detector.registry import DEFAULT_CONFIG, ModelUnavailableError, read_config, resolve_model

    config = args.config or DEFAULT_CONFIG
    if not config.is_file():
        raise _UsageError(f"{config} not found: pass --config path/to/models.json")
    missing = 0
    for entry in read_config(config):
        try:
            resolved = resolve_model(entry)
            print(f"{entry.name}: {resolved.source} {resolved.path}")
        except ModelUnavailableError as error:
            missing += 1
            print(f"{entry.name}: missing ({error})")
    return 1 if missing else 0


def _set_thresholds(args) -> int:
    from deepfake_detector.images import DataError
    from deepfake_detector.layout import set_thresholds

    for folder in args.folders:
        try:
            t = set_thresholds(folder)
        except DataError as error:
            raise _UsageError(str(error)) from None
        print(f"{folder}/config.json: fake if P(fake) ≥ {t['fake']:.2f}, real if ≤ {t['real']:.2f}")
    return 0


class _UsageError(ValueError):
    pass


def _redact(text: str) -> str:
    """Errors are printed: make sure a token can never be part of them."""
    from huggingface_hub import get_token

    token = get_token()
    return text.replace(token, "***") if token and len(token) >= 8 else text  # short fakes would mangle words


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("huggingface_hub").setLevel(logging.WARNING)
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from hub.push import PushError

    commands = {"push": _push, "push-space": _push_space, "space-readme": _space_readme, "pull": _pull,
                "set-thresholds": _set_thresholds}
    try:
        return commands[args.command](args)
    except (PushError, _UsageError) as error:
        print(f"{PROG}: error: {_redact(str(error))}", file=sys.stderr)
        return 2
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        hint = " (check that HF_TOKEN / `hf auth login` has write access)" if status in (401, 403) else ""
        print(f"{PROG}: error: the Hub refused: {_redact(_first_line(error))}{hint}", file=sys.stderr)
        return 1
    except (httpx2.HTTPError, ConnectionError, TimeoutError) as error:
        from huggingface_hub.constants import ENDPOINT

        print(f"{PROG}: error: cannot reach the Hub at {ENDPOINT} ({type(error).__name__}); check the network "
              "or HF_ENDPOINT and retry", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
