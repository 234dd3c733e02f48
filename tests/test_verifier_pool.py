"""verify_many's worker processes: the package they import, the all-error rule, and truncated completions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crl.errors import CrlError
from crl.verifiers import verify_many

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(r"""
    import json
    from crl.verifiers import verify_many

    if __name__ == "__main__":
        out = verify_many([r"\boxed{7}", r"\boxed{8}", "so 2+2 = 4"], ["7", "7", "4"], workers=2, timeout=5.0)
        print(json.dumps([[v.reward, v.status] for v in out]))
""")


@pytest.mark.parametrize("with_init", [False, True], ids=["run-folder", "shadowing-package"])
def test_workers_import_the_parents_crl_whatever_the_cwd_holds(tmp_path, with_init):
    """A fresh process (so a fresh forkserver) run from a folder holding a bogus crl/ and crl/verifiers/.

    The plain run folder shadows the package where crl comes from an editable install's import hook; the
    importable bogus package shadows it with any install, and failed before the fix.
    """
    cwd = tmp_path / "run"
    (cwd / "crl" / "verifiers").mkdir(parents=True)
    (cwd / "crl" / "config.toml").write_text("name = 'a run folder'\n")
    if with_init:  # importable, so a process that picks it up caches it (what made every item fail)
        (cwd / "crl" / "__init__.py").write_text("BOGUS = True\n")
        (cwd / "crl" / "verifiers" / "__init__.py").write_text("BOGUS = True\n")
    script = tmp_path / "scripts" / "check.py"
    script.parent.mkdir()
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[1.0, "ok"], [0.0, "ok"], [1.0, "ok"]]


@pytest.fixture()
def broken_module(tmp_path, monkeypatch):
    (tmp_path / "crl_test_broken_verifier.py").write_text(textwrap.dedent("""
        import time

        def always_raises(completion, answer):
            raise ValueError("boom on " + completion)

        def sometimes_raises(completion, answer):
            if completion == "bad":
                raise ValueError("boom")
            return True

        def always_slow(completion, answer):
            time.sleep(30)
            return True
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "crl_test_broken_verifier"
    sys.modules.pop("crl_test_broken_verifier", None)


def test_every_item_in_error_raises_one_line_crlerror(broken_module):
    with pytest.raises(CrlError) as err:
        verify_many(["a", "b", "c"], ["x"] * 3, verifier=f"{broken_module}:always_raises", workers=2)
    message = str(err.value)
    assert "\n" not in message
    assert "every one of 3 items" in message and "ValueError: boom on" in message


def test_some_errors_or_all_timeouts_do_not_raise(broken_module):
    out = verify_many(["bad", "ok"], ["x", "x"], verifier=f"{broken_module}:sometimes_raises", workers=1)
    assert [v.status for v in out] == ["error", "ok"]
    out = verify_many(["a", "b"], ["x", "x"], verifier=f"{broken_module}:always_slow", workers=2, timeout=0.5)
    assert [v.status for v in out] == ["timeout", "timeout"]


def test_truncated_completions_need_a_complete_final_answer():
    comps = ["The answer is 12", "The answer is 12.", r"so \boxed{12}", r"\boxed{7} and then \boxed{1"]
    golds = ["12", "12", "12", "7"]
    plain = verify_many(comps, golds, workers=1)
    cut = verify_many(comps, golds, workers=1, truncated=[True] * 4)
    assert [v.reward for v in plain] == [1.0, 1.0, 1.0, 0.0]
    assert [v.reward for v in cut] == [0.0, 1.0, 1.0, 0.0]
    assert [v.status for v in cut] == ["no_answer", "ok", "ok", "no_answer"]
    with pytest.raises(CrlError):
        verify_many(comps, golds, workers=1, truncated=[True])


def test_workers_do_not_import_the_callers_script(tmp_path):
    """A worker runs nothing of the script that called verify_many: a bench script imports torch, and every
    worker importing it again made the tiny default's verification 5 s a round instead of 0.03 s."""
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from pathlib import Path
        Path({str(tmp_path)!r}, f"imported-by-{{os.getpid()}}").touch()
        if __name__ == "__main__":
            from crl.verifiers import verify_many
            out = verify_many([r"\\boxed{{3}}"] * 8, ["3"] * 8, workers=2)
            assert [v.reward for v in out] == [1.0] * 8
    """))
    subprocess.run([sys.executable, str(script)], check=True, timeout=120, cwd=tmp_path)
    assert len(list(tmp_path.glob("imported-by-*"))) == 1
