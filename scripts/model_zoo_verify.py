"""Run Project-MONAI/model-zoo's own bundle check (`ci/verify_bundle.py`) on this bundle.

model-zoo checks a bundle laid out as `models/<name>/{configs,models,docs,LICENSE,...}` beside a
`models/model_info.json`; this command builds that layout in a temporary folder from the repo (the
`bundle` package travels with it, as custom code does in model-zoo) and calls model-zoo's `verify`
there, so what it prints is model-zoo's verdict on the files as they are committed.

    python scripts/model_zoo_verify.py --model_zoo /path/to/model-zoo --output docs/results/model_zoo_verify.txt

The metadata-schema step downloads its schema from a release asset; on a machine without that
access it is reported as skipped unless `--schema` names a local copy of the schema file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bundle.cli import run_commands
from bundle.io import write_atomically

REPO = Path(__file__).resolve().parents[1]
BUNDLE_NAME = "xct_modular_unet"
BUNDLE_PARTS = ("configs", "models", "docs", "bundle", "LICENSE")


def _layout(root: Path) -> Path:
    """models/<name>/ with the bundle's parts, and the empty model_info.json model-zoo compares versions with."""
    bundle_path = root / "models" / BUNDLE_NAME
    bundle_path.mkdir(parents=True)
    for part in BUNDLE_PARTS:
        source = REPO / part
        if not source.exists():
            raise FileNotFoundError(f"{source}: a model-zoo bundle needs it")
        if source.is_dir():
            shutil.copytree(source, bundle_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, bundle_path / part)
    (root / "models" / "model_info.json").write_text("{}\n")
    return bundle_path


def _metadata_check(verify_bundle, schema: str | None):
    """model-zoo's metadata step against a local schema, or a stated skip where the schema cannot be had."""
    from monai.bundle import verify_metadata

    def check(bundle_path: str) -> None:
        if schema is None:
            print("metadata schema check skipped: the schema is a release asset this machine cannot download (--schema)")
            json.loads((Path(bundle_path) / "configs" / "metadata.json").read_text())
            return
        verify_metadata(meta_file=os.path.join(bundle_path, "configs/metadata.json"), filepath=schema)

    verify_bundle.verify_metadata_format = check


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy: model-zoo prints its steps, MONAI logs its own."""

    def __init__(self, stream, copy: io.StringIO):
        self.stream, self.copy = stream, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def main(model_zoo: str, output: str | None = None, mode: str = "full", schema: str | None = None) -> None:
    """Verify the bundle with model-zoo's `ci/verify_bundle.py -m MODE`; its log is printed and written to OUTPUT."""
    ci = Path(model_zoo).resolve() / "ci"
    if not (ci / "verify_bundle.py").is_file():
        raise SystemExit(f"{ci / 'verify_bundle.py'}: not found; --model_zoo must name a model-zoo checkout")
    log = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="model_zoo_") as tmp:
        root = Path(tmp)
        _layout(root)
        shutil.copytree(ci, root / "ci")
        cwd, path = os.getcwd(), list(sys.path)
        os.chdir(root)
        sys.path.insert(0, str(root / "ci"))
        try:
            with contextlib.redirect_stdout(_Tee(sys.stdout, log)), contextlib.redirect_stderr(_Tee(sys.stderr, log)):
                import verify_bundle

                _metadata_check(verify_bundle, None if schema is None else str(Path(cwd, schema).resolve()))
                try:
                    verify_bundle.verify(BUNDLE_NAME, "models", mode)
                except Exception as error:
                    raise SystemExit(f"model-zoo verify_bundle -m {mode} failed on {REPO}: {type(error).__name__}: {error}") from error
                print(f"verify_bundle -m {mode}: all steps passed")
        finally:
            os.chdir(cwd)
            sys.path[:] = path
    if output is not None:
        write_atomically(output, log.getvalue())


COMMANDS = main


if __name__ == "__main__":
    run_commands(COMMANDS)
