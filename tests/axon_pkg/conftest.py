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
