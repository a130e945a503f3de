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


def test_demo_pipeline_writes_table_png_and_vectors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("M2IV_HOME", str(tmp_path / "home"))
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny:idefics3", "--tasks", "sandbox-shape-nonce", "--shots", "2", "--n-test", "4",
                 "--steps", "2", "--train-queries", "8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mean accuracy: zero-shot" in text and str(out) in text
    rows = json.loads((out / "demo.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["zero-shot", "icl", "m2iv"] and rows[2]["variant"] == "all-losses"
    assert rows[2]["mean_prompt_tokens"] == rows[0]["mean_prompt_tokens"] < rows[1]["mean_prompt_tokens"]
    assert (out / "demo.png").stat().st_size > 1000
    assert list((out / "work" / "sandbox-shape-nonce").glob("m2iv-*/vectors-*/vectors.safetensors"))


def test_eval_icl_on_vqav2_fixture_end_to_end(tmp_path):
    from conftest import write_vqav2

    write_vqav2(tmp_path / "data")
    out = tmp_path / "run"
    args = ["eval", "tiny:idefics2", "--task", "vqav2", "--data-root", str(tmp_path / "data"), "--method", "icl",
            "--shots", "4", "--out", str(out)]
    r = run(*args)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "vqav2" and summary["shots"] == 4 and summary["n"] == 6
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6
    again = run(*args)  # a finished run resumes to the same files
    assert again.returncode == 0 and json.loads((out / "summary.json").read_text())["score"] == summary["score"]


def test_eval_easy_vqa_zero_shot_llava(tmp_path):
    r = run("eval", "tiny:llava", "--task", "easy-vqa", "--method", "zero-shot", "--limit", "20",
            "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["n"] == 20 and summary["metric"] == "exact_match"


def test_missing_data_root_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "m2iv.cli.main", "eval", "tiny:llava", "--task", "vqav2",
                        "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and str(tmp_path / "nowhere") in r.stderr and r.stderr.count("\n") == 1
