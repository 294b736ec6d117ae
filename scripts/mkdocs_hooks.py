"""MkDocs hooks: what the site needs that is not a file in docs/ — the command-line reference, generated from the
parsers, and a source tree laid out as the package is imported, for the API reference."""

import os
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
SOURCE_TREE = ROOT / "build" / "docs-src"  # mkdocs.yml points the API reference's handler here
FOLDERS = {
    "metaedge": "api",
    "metaedge/sdk": "sdk",
    "metaedge/deploy": "deploy",
    "metaedge/backends": "backends",
    "metaedge/firmware_sim": "firmware_sim",
}


def on_startup(command, dirty) -> None:
    """setup.py maps folders onto ``metaedge.*``; the docstring reader searches directories, so lay them out."""
    package = SOURCE_TREE / "metaedge"
    package.mkdir(parents=True, exist_ok=True)
    for name, folder in FOLDERS.items():
        if name == "metaedge":
            for entry in (ROOT / folder).iterdir():
                _link(package / entry.name, entry)
        else:
            _link(SOURCE_TREE / name, ROOT / folder)


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.is_symlink():
        link.unlink()
    link.symlink_to(target)


def on_files(files, config):
    from metaedge.sdk.cli.main import build_parser
    from metaedge.sdk.cli.reference import markdown

    os.environ.setdefault("COLUMNS", "120")  # argparse wraps help at the terminal's width: one width for the site
    files.append(File.generated(config, "cli-reference.md", content=markdown(build_parser())))
    return files
