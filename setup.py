"""Setuptools hook: ship the top-level registry.db inside the wheel as zoo/registry.db."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithRegistry(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).parent / "registry.db"
        if not source.exists():
            raise SystemExit("registry.db is missing: run `zoo catalog build` in the checkout first")
        target = Path(self.build_lib) / "zoo" / "registry.db"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


setup(cmdclass={"build_py": BuildWithRegistry})
