import pytest

from axon_pkg.cli import main


@pytest.fixture
def axon_home(tmp_path, monkeypatch):
    home = tmp_path / "axon-home"
    monkeypatch.setenv("AXON_HOME", str(home))
    monkeypatch.delenv("MLOS_CORE_ENDPOINT", raising=False)
    monkeypatch.delenv("MLOS_API_KEY", raising=False)
    return home


@pytest.fixture
def axon(axon_home, capsys):
    """Run ``axon-py`` in-process: ``code, out, err = axon("list")``."""

    def run(*argv):
        code = main([str(a) for a in argv])
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


# ---- converter environments and repository stand-ins ---------------------------------------------

def converter_python(kind: str) -> str:
    """The interpreter of a converter environment, or a skip saying how to get one."""
    from axon_pkg.converter_envs import ConverterMissing, python_for

    try:
        return python_for(kind)
    except ConverterMissing as e:
        pytest.skip(f"{e.message} ({e.hint}); make setup builds it")


def run_in(python: str, *args: str, env: dict | None = None, timeout: float = 600) -> dict:
    """``python -m <args>`` with this checkout importable; its last stdout line as JSON."""
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    full = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    proc = subprocess.run([python, "-m", *args], capture_output=True, text=True, env=full, timeout=timeout, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
