"""The Space's configuration header: the YAML front matter of the project's README.md, on `SpaceCardData`.

    header = space_front_matter(models=["user/deepfake-xception"])     # a dict, as SpaceCardData writes it
    readme = refresh_space_header(readme, models=[...])                 # the header up to date, the body as is

`python -m hub space-readme` refreshes README.md in place; `python -m hub push-space` sends the refreshed copy.
"""

import re
from importlib.metadata import PackageNotFoundError, version

import yaml
from huggingface_hub import SpaceCardData

from deepfake_detector.card import LICENSE

FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?\r?\n)?---[ \t]*(\r?\n|\Z)", re.DOTALL)


def render_front_matter(data: dict) -> str:
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120) + "---\n"


def split_front_matter(text: str) -> tuple[dict, str]:
    """(front matter as a dict, body) of a README; ({}, text) when it has none."""
    match = FRONT_MATTER.match(text)
    if not match:
        return {}, text
    return yaml.safe_load(match.group(1) or "") or {}, text[match.end():]


def update_front_matter(text: str, front_matter: dict) -> str:
    """`text` with `front_matter` merged over its YAML header (added if missing); the body is kept as is."""
    current, body = split_front_matter(text)
    return render_front_matter({**current, **front_matter}) + body


def _gradio_version() -> str | None:
    try:
        return version("gradio")  # the installed version, without the cost of importing gradio
    except PackageNotFoundError:
        return None


def _check_short_description(text: str) -> None:
    if len(text) > 60:
        raise ValueError(f"short_description must be 60 characters at most (the Hub refuses longer): "
                         f"{text!r} has {len(text)}")


def space_front_matter(*, models: list[str], title: str = "Deepfake Image Detector", emoji: str = "🕵️",
                       color_from: str = "indigo", color_to: str = "gray", sdk_version: str | None = None,
                       license: str = LICENSE,
                       short_description: str = "Is this face real or generated? Detectors, explained.",
                       pinned: bool = False) -> dict:
    """The Space configuration header (https://huggingface.co/docs/hub/spaces-config-reference)."""
    _check_short_description(short_description)
    return SpaceCardData(title=title, emoji=emoji, colorFrom=color_from, colorTo=color_to, sdk="gradio",
                         sdk_version=sdk_version or _gradio_version(), app_file="app.py", pinned=pinned,
                         license=license, short_description=short_description, models=list(models)).to_dict()


# Keys the code owns and rewrites on every refresh; the others (title, emoji, colours, description, pinned)
# belong to whoever edits the README and are only filled in when missing.
SPACE_OWNED_KEYS = ("sdk", "sdk_version", "app_file", "license", "models")


def refresh_space_header(text: str, *, models: list[str]) -> str:
    """README text with its Space header up to date (see SPACE_OWNED_KEYS); the body is kept as is."""
    current, _ = split_front_matter(text)
    header = space_front_matter(models=models)
    # Existing keys keep their place and, unless the code owns them, their value; missing ones are added.
    merged = {**current, **{key: value for key, value in header.items()
                            if key in SPACE_OWNED_KEYS or key not in current}}
    _check_short_description(str(merged.get("short_description", "")))
    return update_front_matter(text, merged)
