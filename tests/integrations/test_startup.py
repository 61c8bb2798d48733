"""Ray stays out of the way until asked for: ``zoo --help`` and ``zoo list`` import neither Ray nor pyarrow, and the
Ray-only options say so in one line when given without ``--ray``."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("args", [["--help"], ["list"], ["run", "--help"], ["serve", "--help"]])
def test_the_cli_imports_no_ray(args: list[str]) -> None:
    code = ("import sys\nfrom zoo.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow', 'pandas')), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert "LOADED []" in proc.stderr, proc.stderr[-2000:]


def test_ray_only_options_without_ray_are_one_line_errors(cli, qa_repo) -> None:  # noqa: ANN001
    for args, expected in [(["serve", str(qa_repo), "--replicas", "2"], "error: --replicas and --autoscale need --ray"),
                           (["serve", "--ray", str(qa_repo), "--autoscale", "3"], "error: --autoscale '3' is not MIN:MAX"),
                           (["serve", "--ray", str(qa_repo), "--replicas", "2", "--autoscale", "1:2"], "error: give --replicas or --autoscale"),
                           (["run", str(qa_repo), "--ray", "auto", "--question", "Who?"], "error: --input and --output go together")]:
        run = cli(*args)
        assert run.code == 1 and run.err.strip().splitlines() == [run.err.strip()] and run.err.startswith(expected), run.err
