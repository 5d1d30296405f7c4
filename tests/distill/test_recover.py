"""Recovery without labels: a compressed model trained toward the original on unlabeled inputs
(``netshrink.distillation.recover``), through fit and through its parametrizations."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import netshrink
from netshrink.core import finalize_
from netshrink.core.errors import ConfigError
from netshrink.core.model_io import call_model, output_tensor
from netshrink.data import Split
from netshrink.data.unlabeled import UnlabeledInputs
from netshrink.distillation import Recover, matching_loss, recover
from netshrink.train import Callback, FitConfig, load_checkpoint
from netshrink.train.fit import CHECKPOINT_NAME, MODEL_NAME
from tests.distill import run_recover
from tests.distill.run_recover import bert_pair
from tests.forked import run_ranks
from tests.models import TINY_MODELS, tiny_bert, tiny_llama, token_inputs

pytest.importorskip("transformers")


CONFIG = FitConfig(epochs=4, batch_size=16, optimizer="adam", lr=1e-2, weight_decay=0.0)
HELD_OUT = token_inputs(16, seed=9)


def _llama_pair(compress=None):
    """An original tiny Llama with sharp logits (weights scaled up) and its copy compressed
    (default: pruned 50% by magnitude)."""
    torch.manual_seed(0)
    teacher = tiny_llama().eval()
    with torch.no_grad():
        for p in teacher.parameters():
            if p.dim() == 2:
                p.mul_(8)
    student = copy.deepcopy(teacher)
    netshrink.apply_(student, compress or netshrink.MagnitudePrune(sparsity=0.5))
    return student, teacher


def _gap(student, teacher, loss, read=output_tensor, T=1.0):
    with torch.no_grad():
        mine, theirs = read(call_model(student.eval(), HELD_OUT)), read(call_model(teacher, HELD_OUT))
    return float(matching_loss(mine, theirs, loss, T, HELD_OUT["attention_mask"]))


def _linear_weights(model):
    return {name: m.weight.detach().clone() for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def test_pruned_llama_recovers_its_logits_by_kl_and_keeps_its_zeros():
    student, teacher = _llama_pair()
    zeros = {name: w == 0 for name, w in _linear_weights(student).items()}
    before = _gap(student, teacher, "kl", T=2.0)
    result = recover(student, teacher, token_inputs(64, seed=2), Recover(match="logits", T=2.0), CONFIG,
                     progress=False)
    assert _gap(student, teacher, "kl", T=2.0) < 0.8 * before
    assert result.history[-1]["train_acc"] is None
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    after = _linear_weights(student)
    assert sum(int(z.sum()) for z in zeros.values()) > 0
    assert all(bool((after[name][zero] == 0).all()) for name, zero in zeros.items())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not student.model.layers[0]._forward_hooks  # recover leaves no hooks behind


def _hidden(outputs):
    return outputs.hidden_states[-1]


def test_quantized_bert_recovers_its_hidden_states_and_stays_on_its_grid():
    student, teacher = bert_pair()
    untrained, _ = bert_pair()
    base = lambda model: model.bert  # noqa: E731  (the base model's last hidden state is matched)
    gap = lambda model: _gap(base(model), base(teacher), "cosine")  # noqa: E731
    before = gap(student)
    recover(student, teacher, token_inputs(64, seed=2), Recover(match="hidden", loss="cosine"),
            FitConfig(epochs=4, batch_size=16, lr=0.1, weight_decay=0.0), progress=False)
    assert gap(student) < 0.8 * before
    assert all(p.requires_grad for p in student.parameters())  # the head, left out of training, is on again
    finalize_(student)
    finalize_(untrained)
    trained, plain = _linear_weights(student), _linear_weights(untrained)
    assert any(not torch.equal(trained[name], plain[name]) for name in trained)
    for head in ("classifier", "bert.pooler.dense"):  # hidden states do not depend on them: untouched
        assert torch.equal(trained[head], plain[head])
    for name, weight in trained.items():  # 2 bits per output channel: at most 4 values in each row
        assert max(len(row.unique()) for row in weight) <= 4, name


def test_embeddings_and_named_layers_are_matched_from_a_dataloader():
    student, teacher = _llama_pair()
    loader = DataLoader(UnlabeledInputs(token_inputs(32, seed=3)), batch_size=16)
    for config in (Recover(match="embedding", loss="mse"), Recover(match="hidden", layers=("model.layers.0",))):
        result = recover(student, teacher, loader, config, FitConfig(epochs=2, batch_size=16, optimizer="adam",
                                                                      lr=1e-2, weight_decay=0.0), progress=False)
        assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_a_pruned_image_model_recovers_on_an_image_tensor():
    torch.manual_seed(0)
    teacher = TINY_MODELS["convnet"]().eval()
    student, second = copy.deepcopy(teacher), copy.deepcopy(teacher)
    for model in (student, second):
        netshrink.apply_(model, netshrink.MagnitudePrune(sparsity=0.7))
    images = torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    result = recover(student, teacher, images, Recover(loss="mse"), CONFIG, progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    split = recover(second, teacher, Split(images, torch.zeros(64, dtype=torch.long)),
                    Recover(loss="mse"), CONFIG, progress=False)  # labels are not used
    assert split.history[-1]["train_loss"] < split.history[0]["train_loss"]


class _Crash(Exception):
    pass


class _CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, model, info):
        if info.step + 1 == self.step:
            raise _Crash


def test_resume_after_a_crash_gives_the_uninterrupted_weights(tmp_path):
    config = FitConfig(epochs=2, batch_size=16, optimizer="adam", lr=1e-2, weight_decay=0.0, checkpoint_every_steps=3)
    data = token_inputs(64, seed=2)  # 4 steps an epoch; the crash is in step 3 of epoch 2
    reference, teacher = _llama_pair()
    recover(reference, teacher, data, Recover(T=2.0), config, progress=False)
    student, teacher = _llama_pair()
    with pytest.raises(_Crash):
        recover(student, teacher, data, Recover(T=2.0), config, out_dir=tmp_path, progress=False,
                callbacks=[_CrashAt(7)])
    _, meta = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 2)  # resumed mid-epoch
    student, teacher = _llama_pair()
    recover(student, teacher, data, Recover(T=2.0), config, out_dir=tmp_path, resume=True, progress=False)
    expected = reference.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in student.state_dict().items())


class _Labels(nn.Module):
    """A model that gives class labels, not scores."""

    def __init__(self):
        super().__init__()
        self.net = TINY_MODELS["user_mlp"]()

    def forward(self, x):
        return self.net(x).argmax(-1)


@pytest.mark.parametrize("case, words", [
    ("no such module", "has no layer 'nowhere'"),
    ("teacher without logits", "has no logits"),
    ("kl on hidden states", "matched by loss 'cosine' or 'mse'"),
    ("layers with logits", "use match='hidden'"),
    ("labels-only teacher", "labels"),
    ("data of labels alone", "unlabeled inputs"),
    ("a frozen student", "nothing to train"),
])
def test_what_cannot_be_matched_is_refused_in_one_line(tmp_path, case, words):
    def run():
        data = token_inputs(16)
        if case == "no such module":
            student, teacher, config = tiny_llama(), tiny_llama(), Recover(match="hidden", layers=("nowhere",))
        elif case == "teacher without logits":
            student, teacher, config = tiny_bert().bert, tiny_bert().bert, Recover(match="logits")
        elif case == "kl on hidden states":
            student, teacher, config = tiny_llama(), tiny_llama(), Recover(match="hidden", loss="kl")
        elif case == "layers with logits":
            student, teacher, config = tiny_llama(), tiny_llama(), Recover(layers=("model.layers.0",))
        elif case == "labels-only teacher":
            student, teacher, config = _Labels(), _Labels(), Recover()
            data = torch.randn(16, 1, 8, 8)
        elif case == "a frozen student":
            student, teacher, config = tiny_llama().requires_grad_(False), tiny_llama(), Recover()
        else:
            student, teacher, config, data = tiny_llama(), tiny_llama(), Recover(), [1, 2, 3]
        recover(student, teacher, data, config, CONFIG, out_dir=tmp_path, progress=False)

    with pytest.raises(ConfigError, match=words) as info:
        run()
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_two_process_ddp_recovery_matches_one_process(tmp_path):
    """Hidden states are matched, so the classifier gets no gradient: DDP runs only because
    recover leaves such parameters out of training."""
    for rank in run_ranks(run_recover.main, [str(tmp_path)], 300):  # forked ranks (tests/forked.py)
        assert rank.returncode == 0, rank.stderr[-3000:]
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME)[1]["world_size"] == 2
    distributed_weights, _ = load_checkpoint(tmp_path / MODEL_NAME)
    single = run_recover.run().state_dict()
    assert distributed_weights.keys() == single.keys()
    for key, value in single.items():
        torch.testing.assert_close(distributed_weights[key], value, rtol=0, atol=1e-5)


def test_a_clustered_llama_keeps_its_codebooks_through_recovery():
    student, teacher = _llama_pair(netshrink.Cluster(bits=3))
    before = _gap(student, teacher, "kl", T=2.0)
    recover(student, teacher, token_inputs(64, seed=2), Recover(T=2.0),
            FitConfig(epochs=4, batch_size=16, optimizer="adam", lr=1e-3, weight_decay=0.0), progress=False)
    assert _gap(student, teacher, "kl", T=2.0) < 0.9 * before
    finalize_(student)
    for name, weight in _linear_weights(student).items():  # 3 bits: at most 8 shared values a layer
        assert len(weight.unique()) <= 8, name
