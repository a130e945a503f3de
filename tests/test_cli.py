import json
import subprocess
import sys

from m2iv.cli.main import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "m2iv.cli.main", *args], capture_output=True, text=True)


def test_inspect_json_for_qwen2_vl():
    r = run("inspect", "tiny:qwen2_vl", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["layers_path"] == "model.language_model.layers"
    assert info["num_layers"] == 2 and info["hidden_size"] == 64 and info["num_heads"] == 4
    assert info["head_dim"] == 16 and info["image_token_ids"] and "attn_head" in info["injection_sites"]


def test_inspect_text(capsys):
    assert main(["inspect", "tiny:idefics2"]) == 0
    out = capsys.readouterr().out
    assert "model.text_model.layers" in out and "injection_sites" in out


def test_errors_are_one_line_without_traceback():
    r = run("inspect", "./missing-model")
    assert r.returncode == 2 and r.stderr.startswith("error: no model directory at ./missing-model")
    assert "Traceback" not in r.stderr


def test_help_shows_examples():
    r = run("--help")
    assert r.returncode == 0 and "m2iv inspect tiny:qwen2_vl --json" in r.stdout
    assert "example:" in run("inspect", "--help").stdout


def test_demo_runs_its_checks(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "logits identical to the plain model: True" in out and "not in this version yet" in out
