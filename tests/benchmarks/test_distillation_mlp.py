"""``benchmarks/distillation_mlp.py`` trains the students it names, keeps each run, and reads its
choices on validation."""

import pytest
import torch

import benchmarks.distillation_mlp as study
from benchmarks.distillation_mlp import (
    MLP,
    Settings,
    choose_on_validation,
    closure,
    lane_convnet,
    lane_mlp_teacher,
    run_name,
    summarise,
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


def test_choices_are_read_on_validation_not_test():
    records = [{"T": 2.0, "val_acc": 0.90, "test_acc": 0.95}, {"T": 8.0, "val_acc": 0.92, "test_acc": 0.80}]
    assert choose_on_validation(records)["T"] == 8.0


def test_closure_is_the_share_of_the_gap():
    assert closure(0.91, 0.90, 0.92) == pytest.approx(0.5)
    assert closure(0.89, 0.90, 0.92) == pytest.approx(-0.5)


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


def test_both_lanes_train_and_summarise(tmp_path, monkeypatch):
    data, settings = _toy_data(), _tiny_settings()
    teacher = MLP(32, 32, num_classes=3)
    convnet = lane_convnet(data, tmp_path, settings, teacher)
    names = [r["name"] for r in convnet["runs"]]
    assert names == ["alone_300-100_s0", "alone_300-100_s1", "convnet_300-100_s0_T2", "convnet_300-100_s1_T2",
                     "alone_16-8_s0", "convnet_16-8_s0_T2"]
    mlp = lane_mlp_teacher(data, tmp_path, settings)
    sweep = [r for r in mlp["runs"] if r["seed"] == 0]
    assert [r["T"] for r in sweep] == list(settings.mlp_teacher_temperatures)
    assert mlp["chosen_T"] == choose_on_validation(sweep)["T"]
    assert [(r["seed"], r["T"]) for r in mlp["runs"] if r["seed"] != 0] == [(1, mlp["chosen_T"])]
    assert (tmp_path / "mlp_teacher.safetensors").exists()
    again = lane_mlp_teacher(data, tmp_path, settings)  # the kept teacher is loaded, not retrained
    assert again["teacher"] == mlp["teacher"]

    summary = summarise(convnet["runs"], mlp, 0.97, settings)
    by_name = {r["name"]: r for r in convnet["runs"] + mlp["runs"]}
    row = summary["widths"][1]
    assert row["widths"] == [16, 8]
    assert row["gap_closure"] == pytest.approx(closure(by_name["convnet_16-8_s0_T2"]["test_acc"],
                                                       by_name["alone_16-8_s0"]["test_acc"], 0.97))
    seed1 = closure(by_name[run_name("mlp", (300, 100), 1, mlp["chosen_T"])]["test_acc"],
                    by_name["alone_300-100_s1"]["test_acc"], mlp["teacher"]["test_acc"])
    assert summary["zoo_from_mlp"]["gap_closure_per_seed"][1] == pytest.approx(seed1)
    assert summary["zoo_from_convnet"]["gap_closure"] == pytest.approx(
        sum(summary["zoo_from_convnet"]["gap_closure_per_seed"].values()) / 2)
