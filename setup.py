"""Setuptools hooks: ship registry.db and its seed of cards inside the wheel as zoo/registry.db and
zoo/registry.cards.json (MANIFEST.in puts them in the sdist); build the sparse kernels (C, OpenMP)."""

import shutil
from pathlib import Path

import sys

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildWithRegistry(build_py):
    def run(self) -> None:
        super().run()
        for name in ("registry.db", "registry.cards.json"):  # the seed is zoo.catalog.cardcache.seed_file(registry.db)
            source = Path(__file__).parent / name
            if not source.exists():
                raise SystemExit(f"{name} is missing: run `zoo catalog build` in the checkout first")
            target = Path(self.build_lib) / "zoo" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
kernels = Extension(
    "zoo.runtime._kernels",
    sources=["zoo/runtime/_kernels.c"],
    depends=["zoo/runtime/_kernels_avx2.h", "zoo/runtime/_jit.h", "zoo/runtime/_forward.h", "zoo/runtime/_attention_i8.h"],
    extra_compile_args=["-O3", "-std=c11", "-fno-math-errno", "-fno-trapping-math", *openmp],
    extra_link_args=openmp,
)

setup(cmdclass={"build_py": BuildWithRegistry}, ext_modules=[kernels])
