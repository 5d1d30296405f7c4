"""``benchmarks.studies.distillation_mlp.py`` trains the students it names, keeps each run, and reads its
choices on validation."""

import pytest
import torch

import benchmarks.studies.distillation_mlp as study
from benchmarks.common import gap_closure as closure
from benchmarks.studies.distillation_mlp import (
    MLP,
    TEACHER_DROPOUTS,
    Settings,
    build_targets,
    choose_on_validation,
    lane_convnet,
    lane_mlp_students,
    markdown,
    run_name,
    shifted_views,
    summarise,
    train_mlp_teacher,
    train_student,
)
from netshrink.data import Dataset, Split
from netshrink.models import create_for_data

SHAPE = (1, 28, 28)


def _toy_data(classes: int = 3) -> Dataset:
    torch.manual_seed(0)
    x = torch.randn(700, *SHAPE)
    y = torch.randint(0, classes, (700,))
    x[torch.arange(700), 0, y, y] += 4.0  # learnable: a bright pixel per class
    return Dataset(name="toy", train=Split(x[:512], y[:512]), val=Split(x[512:600], y[512:600]),
                   test=Split(x[600:], y[600:]), num_classes=classes, classes=tuple("abc"[:classes]))


def _tiny_settings() -> Settings:
    settings = Settings(quick=True)
    settings.widths = ((300, 100), (16, 8))
    settings.epochs = settings.teacher_epochs = 2
    return settings


def test_mlp_300_100_is_the_zoo_lenet300_100_under_the_same_seed():
    x = torch.randn(4, *SHAPE)
    for seed in (0, 5):
        torch.manual_seed(seed)
        zoo = create_for_data("lenet300_100", SHAPE, 10)
        torch.manual_seed(seed)
        ours = MLP(300, 100)
        for name in ("fc1", "fc2", "fc3"):
            assert torch.equal(getattr(zoo, name).weight, getattr(ours, name).weight)
        torch.testing.assert_close(ours(x), zoo(x))


def test_the_teachers_dropout_acts_in_training_only():
    torch.manual_seed(0)
    teacher = MLP(32, 32, dropout=(0.2, 0.5))
    x = torch.randn(8, *SHAPE)
    teacher.train()
    assert not torch.equal(teacher(x), teacher(x))
    teacher.eval()
    torch.testing.assert_close(teacher(x), teacher(x))
    plain = MLP(32, 32).train()
    torch.testing.assert_close(plain(x), plain(x))


def test_each_view_is_the_image_shifted_by_at_most_a_pixel_and_maybe_flipped():
    data = _toy_data()
    views = shifted_views(data, 3)
    n = len(data.train.x)
    assert views.train.x.shape == (3 * n, *SHAPE) and torch.equal(views.train.y, data.train.y.repeat(3))
    assert torch.equal(views.train.x[:n], data.train.x)
    fill = float(data.train.x.min())
    for i in (0, 7, n - 1):
        image, copy = data.train.x[i], views.train.x[2 * n + i]
        padded = torch.nn.functional.pad(image, (1, 1, 1, 1), value=fill)
        candidates = [c for dy in range(3) for dx in range(3)
                      for c in (padded[:, dy:dy + 28, dx:dx + 28], padded[:, dy:dy + 28, dx:dx + 28].flip(-1))]
        assert any(torch.equal(copy, c) for c in candidates)
    assert not torch.equal(views.train.x[n:2 * n], views.train.x[2 * n:])


def test_choices_are_read_on_validation_not_test():
    records = [{"T": 2.0, "val_acc": 0.90, "test_acc": 0.95}, {"T": 8.0, "val_acc": 0.92, "test_acc": 0.80}]
    assert choose_on_validation(records)["T"] == 8.0


def test_closure_is_the_share_of_the_gap_and_undefined_without_one():
    assert closure(0.91, 0.90, 0.92) == pytest.approx(0.5)
    assert closure(0.89, 0.90, 0.92) == pytest.approx(-0.5)
    assert closure(0.89, 0.90, 0.90) is None and closure(0.91, 0.90, 0.88) is None


def test_a_kept_run_is_read_back_not_retrained(tmp_path, monkeypatch):
    data, settings = _toy_data(), _tiny_settings()
    first = train_student(data, tmp_path, settings, "alone", (16, 8), 1)
    assert (tmp_path / "runs" / f"{run_name('alone', (16, 8), 1)}.json").exists()
    assert first["val_acc"] > 0.5 and first["params"] == 784 * 16 + 16 + 16 * 8 + 8 + 8 * 3 + 3

    def refuse(*args, **kwargs):
        raise AssertionError("a kept run was trained again")

    monkeypatch.setattr(study, "fine_tune", refuse)
    assert train_student(data, tmp_path, settings, "alone", (16, 8), 1) == first
    with pytest.raises(AssertionError, match="trained again"):
        train_student(data, tmp_path, settings, "alone", (16, 8), 2)
    settings.epochs = 3  # a kept run made with other settings is not reused
    with pytest.raises(AssertionError, match="trained again"):
        train_student(data, tmp_path, settings, "alone", (16, 8), 1)


def test_a_teacher_trained_again_clears_its_students(tmp_path):
    data, settings = _toy_data(), _tiny_settings()
    settings.mlp_teacher_temperatures, settings.seeds = (2.0,), (0,)
    name = next(iter(TEACHER_DROPOUTS))
    first = lane_mlp_students(data, tmp_path, settings, name)
    kept = tmp_path / "runs" / f"{first['runs'][0]['name']}.json"
    assert kept.exists() and (tmp_path / "logits" / f"mlp-{name}").exists()
    settings.teacher_views = 3
    teacher, record = train_mlp_teacher(data, tmp_path, settings, name)
    assert record["views"] == 3 and record["seconds"] != first["teacher"]["seconds"]
    assert not kept.exists() and not (tmp_path / "logits" / f"mlp-{name}").exists()


def test_both_lanes_train_and_summarise(tmp_path, monkeypatch):
    data, settings = _toy_data(), _tiny_settings()
    teacher = MLP(32, 32, num_classes=3)
    convnet = lane_convnet(data, tmp_path, settings, teacher)
    names = [r["name"] for r in convnet["runs"]]
    assert names == ["alone_300-100_s0", "alone_300-100_s1", "convnet_300-100_s0_T2", "convnet_300-100_s1_T2",
                     "alone_16-8_s0", "convnet_16-8_s0_T2"]
    teachers = [train_mlp_teacher(data, tmp_path, settings, name)[1] for name in TEACHER_DROPOUTS]
    assert [t["dropout"] for t in teachers] == [list(d) for d in TEACHER_DROPOUTS.values()]
    name = choose_on_validation(teachers)["name"]
    mlp = lane_mlp_students(data, tmp_path, settings, name)  # the kept teacher is loaded, not retrained
    assert mlp["teacher"] == teachers[list(TEACHER_DROPOUTS).index(name)]
    sweep = [r for r in mlp["runs"] if r["seed"] == 0]
    assert [r["T"] for r in sweep] == list(settings.mlp_teacher_temperatures)
    assert mlp["chosen_T"] == choose_on_validation(sweep)["T"]
    assert [(r["seed"], r["T"]) for r in mlp["runs"] if r["seed"] != 0] == [(1, mlp["chosen_T"])]
    assert {r["name"] for r in mlp["runs"]} <= {run_name(f"mlp-{name}", (300, 100), s, T)
                                                 for s in (0, 1) for T in settings.mlp_teacher_temperatures}

    summary = summarise(convnet["runs"], mlp, teachers, 0.97, settings)
    by_name = {r["name"]: r for r in convnet["runs"] + mlp["runs"]}
    row = summary["widths"][1]
    assert row["widths"] == [16, 8]
    assert row["gap_closure"] == pytest.approx(closure(by_name["convnet_16-8_s0_T2"]["test_acc"],
                                                       by_name["alone_16-8_s0"]["test_acc"], 0.97))
    seed1 = closure(by_name[run_name(mlp["kind"], (300, 100), 1, mlp["chosen_T"])]["test_acc"],
                    by_name["alone_300-100_s1"]["test_acc"], mlp["teacher"]["test_acc"])
    assert summary["zoo_from_mlp"]["gap_closure_per_seed"][1] == pytest.approx(seed1)
    alone_mean = (by_name["alone_300-100_s0"]["test_acc"] + by_name["alone_300-100_s1"]["test_acc"]) / 2
    taught_mean = (by_name["convnet_300-100_s0_T2"]["test_acc"] + by_name["convnet_300-100_s1_T2"]["test_acc"]) / 2
    assert summary["zoo_from_convnet"]["gap_closure"] == pytest.approx(closure(taught_mean, alone_mean, 0.97))
    targets = build_targets(summary)
    assert [t["value"] for t in targets] == [summary["zoo_from_convnet"]["gap_closure"]]
    doc = {"summary": summary, "targets": targets, "device": "cpu",
           "measurements": {"alpha": 0.9, "epochs": 2, "seconds": 1.0, "training_seconds": 60.0}}
    assert "| 16-8 |" in markdown(doc) and "lenet300_100 gap closure, convnet teacher" in markdown(doc)

    summary = summarise(convnet["runs"], mlp, teachers, 0.0, settings)  # a teacher behind every student
    assert summary["zoo_from_convnet"]["gap_closure"] is None and build_targets(summary) == []
    assert "n/a" in markdown({**doc, "summary": summary, "targets": []})
