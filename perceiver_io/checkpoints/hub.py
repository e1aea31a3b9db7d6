"""Where a ``from_pretrained`` source lives: a local folder, or a hub repository through huggingface_hub's cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HubOptions:
    """transformers' download keywords, handed to ``huggingface_hub.snapshot_download``; ``subfolder`` is a
    folder inside the repository (or inside a local model folder)."""

    cache_dir: str | os.PathLike | None = None
    force_download: bool = False
    local_files_only: bool = False
    token: str | bool | None = None
    revision: str | None = None
    subfolder: str = ""

    def check_local(self, source: str | os.PathLike) -> None:
        """A local source has no revision, cache or token: raise if one was given rather than ignore it."""
        given = [
            name
            for name, value in (
                ("cache_dir", self.cache_dir),
                ("force_download", self.force_download or None),
                ("token", self.token),
                ("revision", self.revision),
            )
            if value is not None
        ]
        if given:
            raise ValueError(f"{source} is a local path; {', '.join(given)} apply only to hub ids (owner/name)")


def is_hub_id(source: str | os.PathLike) -> bool:
    """``owner/name`` as the hub spells repository ids (and not a path that merely does not exist)."""
    text = str(source)
    parts = text.split("/")
    return (
        isinstance(source, str)
        and len(parts) == 2
        and all(parts)
        and not text.startswith((".", "~"))
        and all(c.isalnum() or c in "-_." for c in text.replace("/", ""))
    )


def resolve_source(source: str | os.PathLike, hub: HubOptions, patterns: list[str]) -> Path:
    """The local folder holding ``source``'s files: ``source/subfolder`` for a folder, else the cached snapshot
    of hub repository ``source`` (fetching the files matching ``patterns`` unless offline or cached)."""
    path = Path(source)
    if path.is_dir():
        hub.check_local(path)
        folder = path / hub.subfolder
        if not folder.is_dir():
            raise FileNotFoundError(f"{path} has no subfolder {hub.subfolder!r}")
        return folder
    if not is_hub_id(source):
        raise FileNotFoundError(
            f"no such file or folder: {str(source)!r} (it is neither a model folder, a DeepMind file nor a hub id "
            "owner/name)"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(f"loading {source!r} from the hub needs `pip install perceiver_io[hub]`") from None
    prefix = f"{hub.subfolder.strip('/')}/" if hub.subfolder else ""
    try:
        folder = snapshot_download(
            str(source),
            revision=hub.revision,
            cache_dir=hub.cache_dir,
            force_download=hub.force_download,
            local_files_only=hub.local_files_only,
            token=hub.token,
            allow_patterns=[prefix + p for p in patterns],
        )
    except Exception as err:  # the hub client raises many types (offline, 404, auth); all mean "cannot fetch"
        raise OSError(
            f"could not fetch {str(source)!r} from the Hugging Face hub ({type(err).__name__}: {err}). Check the "
            "network (or HF_HUB_OFFLINE, cache_dir, revision) or pass a local folder or DeepMind checkpoint file."
        ) from None
    folder = Path(folder) / hub.subfolder
    if not folder.is_dir():
        raise FileNotFoundError(f"hub repository {source!r} has no subfolder {hub.subfolder!r}")
    return folder
