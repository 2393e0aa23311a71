"""hotdog.evaluate and hotdog.predict on a checkpoint trained on the shipped sample."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from hotdog.evaluate import evaluate
from hotdog.models import load_classifier
from hotdog.predict import expand_paths, predict_files
from tests.conftest import SAMPLE, copy_sample, run_cli


@pytest.fixture(scope="module")
def checkpoint(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "best.ckpt"


def test_evaluate_writes_the_full_report(compose_train, checkpoint: Path, tmp_path: Path):
    cfg = compose_train(f"ckpt_path={checkpoint}", config_name="eval")
    report = evaluate(cfg)
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(report))
    assert set(metrics) >= {"accuracy", "f1", "auroc", "per_class", "counts", "confusion_matrix"}
    assert set(metrics["per_class"]) == {"hot_dog", "not_hot_dog"}
    assert all(metrics["per_class"][c]["support"] == 20 for c in metrics["per_class"])
    matrix = metrics["confusion_matrix"]["rows_true_cols_predicted"]
    assert sum(map(sum, matrix)) == 40
    assert metrics["counts"]["correct"] == matrix[0][0] + matrix[1][1]
    assert metrics["accuracy"] == pytest.approx(metrics["counts"]["correct"] / 40)
    with (out / "misclassified.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == metrics["counts"]["misclassified"]
    assert all(row["true"] != row["predicted"] and Path(row["file"]).is_file() for row in rows)
    with (out / "predictions.csv").open() as stream:
        every = list(csv.DictReader(stream))
    assert len(every) == 40
    for row in every:  # each photo's probabilities, summing to 1, the larger one predicted
        p_hot_dog, p_other = float(row["p_hot_dog"]), float(row["p_not_hot_dog"])
        assert p_hot_dog + p_other == pytest.approx(1, abs=2e-4)
        assert row["predicted"] == ("hot_dog" if p_hot_dog > p_other else "not_hot_dog")
    with Image.open(out / "confusion_matrix.png") as picture:
        assert picture.size[0] > 300


def test_evaluate_agrees_with_the_training_run(compose_train, checkpoint: Path, trained_run: Path):
    # Training tests in bfloat16; evaluate runs in float32 unless told otherwise.
    report = evaluate(
        compose_train(f"ckpt_path={checkpoint}", "trainer.precision=bf16-mixed", config_name="eval")
    )
    at_training = json.loads((trained_run / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(at_training["accuracy"])
    assert report["auroc"] == pytest.approx(at_training["auroc"], abs=1e-6)


def _check_evaluation(done, out: Path) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 <= summary["accuracy"] <= 1
    assert json.loads((out / "metrics.json").read_text())["counts"]["images"] == 6


def _evaluation_on_another_data_root(checkpoint: Path, tmp_path: Path) -> tuple[list[str], Path]:
    """``hotdog.evaluate``'s arguments for 6 sample photos in a folder of their own; its output."""
    data = copy_sample(tmp_path / "other", per_class=3, splits=("test",))
    out = tmp_path / "eval"
    overrides = [f"ckpt_path={checkpoint}", f"data.root={data}", f"paths.output_dir={out}"]
    return [*overrides, f"hydra.run.dir={out}"], out


def test_evaluate_on_another_data_root(run_main, checkpoint: Path, tmp_path: Path):
    arguments, out = _evaluation_on_another_data_root(checkpoint, tmp_path)
    _check_evaluation(run_main("hotdog.evaluate", *arguments), out)


@pytest.mark.slow  # the real command in a child process; the test above runs the same code
def test_evaluate_cli_on_another_data_root(checkpoint: Path, tmp_path: Path):
    arguments, out = _evaluation_on_another_data_root(checkpoint, tmp_path)
    done = run_cli("-m", "hotdog.evaluate", *arguments)
    _check_evaluation(done, out)
    assert "litmodels" not in done.stdout + done.stderr  # the output is the project's own


def test_predict_files_matches_evaluate(compose_train, checkpoint: Path, tmp_path: Path):
    # Both run in float32, so even a borderline photo gets the same label.
    report = evaluate(compose_train(f"ckpt_path={checkpoint}", config_name="eval"))
    with (tmp_path / "run" / "misclassified.csv").open() as stream:
        wrong = {Path(row["file"]).name for row in csv.DictReader(stream)}
    model = load_classifier(checkpoint)
    files = expand_paths([SAMPLE / "test"])
    assert len(files) == 40
    results = predict_files(model, files)
    assert {
        Path(r["file"]).name for r in results if r["label"] != Path(r["file"]).parent.name
    } == wrong
    assert len(results) - len(wrong) == report["counts"]["correct"]
    for result in results:
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["probability"] == max(result["probabilities"].values())


def _check_text_lines(stdout: str, photos: list[Path]) -> None:
    lines = stdout.strip().splitlines()
    assert len(lines) == len(photos)
    path, label, probability, *unsure = lines[0].split("\t")
    assert path == str(photos[0]) and label in {"hot_dog", "not_hot_dog"}
    assert unsure in ([], ["unsure"])
    assert 0.5 <= float(probability) <= 1.0


@pytest.mark.slow  # the real command in a child process; the test below runs the same code
def test_predict_cli_in_a_child_process(checkpoint: Path):
    photos = sorted((SAMPLE / "test" / "hot_dog").glob("*.jpg"))[:2]
    done = run_cli("-m", "hotdog.predict", str(checkpoint), *map(str, photos))
    assert done.returncode == 0, done.stderr[-3000:]
    _check_text_lines(done.stdout, photos)


def test_predict_cli_text_and_json(run_main, checkpoint: Path, tmp_path: Path):
    photos = sorted((SAMPLE / "test" / "hot_dog").glob("*.jpg"))[:2]
    done = run_main("hotdog.predict", str(checkpoint), *map(str, photos))
    assert done.returncode == 0, done.stderr[-3000:]
    _check_text_lines(done.stdout, photos)

    done = run_main("hotdog.predict", str(checkpoint), str(photos[0]), "--json")
    record = json.loads(done.stdout)
    assert set(record) == {"file", "label", "probability", "probabilities", "unsure"}


def test_predict_cli_reports_bad_files_and_goes_on(run_main, checkpoint: Path, tmp_path: Path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((SAMPLE / "test" / "not_hot_dog").glob("*.jpg"))[0]
    shutil.copy(good, folder / "a_good.jpg")
    (folder / "b_broken.jpg").write_bytes(good.read_bytes()[:1000])
    (folder / "c_text.png").write_text("hello")
    done = run_main("hotdog.predict", str(checkpoint), str(folder), "--json")
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.strip().splitlines()]
    assert [Path(r["file"]).name for r in records] == ["a_good.jpg", "b_broken.jpg", "c_text.png"]
    assert "label" in records[0]
    assert "truncated" in records[1]["error"] and "not an image" in records[2]["error"]
    assert "2 of 3 file(s) could not be read" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.ckpt", str(SAMPLE)], "Checkpoint missing.ckpt does not exist"),
        (["CKPT", "no/such/photo.jpg"], "no/such/photo.jpg does not exist"),
        (["CKPT", "EMPTY"], "pass image files or folders holding them (.bmp, .gif, .jpeg"),
        (["CKPT_FOLDER", str(SAMPLE)], "is a folder; pass the checkpoint file in it"),
        (["gs://bucket/best.ckpt", str(SAMPLE)], "gs://bucket/best.ckpt is not on this machine"),
        (["CKPT", "gs://bucket/photo.jpg"], "Image gs://bucket/photo.jpg is not on this machine"),
        (["TRUNCATED", str(SAMPLE)], "checkpoint (it is truncated or not a PyTorch checkpoint);"),
    ],
)
def test_predict_cli_user_errors_are_one_sentence(
    run_main, checkpoint: Path, args, message, tmp_path: Path
):
    given = {"CKPT": str(checkpoint), "CKPT_FOLDER": str(checkpoint.parent), "EMPTY": str(tmp_path)}
    given["TRUNCATED"] = str(tmp_path / "cut.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(checkpoint.read_bytes()[:4096])  # a copy cut short
    args = [given.get(a, a) for a in args]
    done = run_main("hotdog.predict", *args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_evaluate_cli_without_checkpoint_is_one_sentence(run_main, tmp_path: Path):
    run_folder = tmp_path / "run"
    done = run_main(
        "hotdog.evaluate", f"paths.output_dir={run_folder}", f"hydra.run.dir={run_folder}"
    )
    assert done.returncode == 2
    assert "No checkpoint given" in done.stderr and "Traceback" not in done.stderr
    assert not run_folder.exists()  # a failed command leaves no run behind


def test_evaluate_cli_bad_data_root_is_one_sentence_and_leaves_nothing(
    run_main, checkpoint: Path, tmp_path: Path
):
    """The run's bookkeeping (config.yaml, run.json) is written before the data are read; a
    failure there leaves no half run folder behind either."""
    run_folder = tmp_path / "run"
    done = run_main(
        "hotdog.evaluate",
        f"ckpt_path={checkpoint}",
        f"data.root={tmp_path / 'nowhere'}",
        f"paths.output_dir={run_folder}",
        f"hydra.run.dir={run_folder}",
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert f"error: Data root {tmp_path / 'nowhere'} does not exist" in done.stderr
    assert not run_folder.exists()
