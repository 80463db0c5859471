"""The hashes that tell two models, or two sets of calibration data, apart (``autoq.fingerprints``)."""

from __future__ import annotations

import torch

from autoq.fingerprints import batch_shapes_digest, data_fingerprint, model_hash, structure_digest


def _mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


SCALE = 1.0  # read by `_Scaled.forward`: a test changes it, as a user edits the code


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class _Scaled(_Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x) * SCALE))


def test_model_hash_follows_every_stored_byte_name_and_dtype_but_not_a_non_persistent_buffer() -> None:
    model = _mlp()
    base = model_hash(model)
    assert base == model_hash(_mlp()) and len(base) == 20
    nudged = _mlp()
    with torch.no_grad():
        nudged[2].bias[1] = torch.nextafter(nudged[2].bias[1], torch.tensor(1.0))  # one ulp of one bias
    assert model_hash(nudged) != base
    assert model_hash(_mlp().double()) != base
    renamed = torch.nn.Sequential(*_mlp())
    renamed.add_module("extra", torch.nn.Identity())
    assert model_hash(renamed) == base  # no weights added: the state dict is the same
    buffered = _mlp()
    buffered.register_buffer("scratch", torch.ones(3), persistent=False)
    assert model_hash(buffered) == base
    buffered.register_buffer("kept", torch.ones(3))
    assert model_hash(buffered) != base
    # the same bytes in another dtype (a float32 buffer of zeros, an int32 one) are other weights
    as_float, as_int = _mlp(), _mlp()
    as_float.register_buffer("steps", torch.zeros(3, dtype=torch.float32))
    as_int.register_buffer("steps", torch.zeros(3, dtype=torch.int32))
    assert model_hash(as_float) != model_hash(as_int)


def test_structure_digest_sees_what_the_weights_do_not() -> None:
    model, other = _mlp(), _mlp()
    assert structure_digest(model) == structure_digest(other)
    other[1] = torch.nn.GELU()
    assert structure_digest(other) != structure_digest(model)
    assert model_hash(other) == model_hash(model)
    # a Hugging Face config's settings that no module's repr shows (a rope base, a dropout) are part of the structure
    from transformers import PretrainedConfig

    model.config, other = PretrainedConfig(rope_theta=10000.0), _mlp()
    other.config = PretrainedConfig(rope_theta=500000.0)
    assert structure_digest(other) != structure_digest(model)
    other.config = PretrainedConfig(rope_theta=10000.0)
    assert structure_digest(other) == structure_digest(model)


def test_data_fingerprint_reads_bytes_keys_and_plain_values() -> None:
    x = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    base = data_fingerprint([{"x": x, "temperature": 1.0}])
    assert base == data_fingerprint([{"x": x.clone(), "temperature": 1.0}])
    changed = x.clone()
    changed[2, 3] += 1
    assert data_fingerprint([{"x": changed, "temperature": 1.0}]) != base
    assert data_fingerprint([{"y": x, "temperature": 1.0}]) != base
    assert data_fingerprint([{"x": x, "temperature": 0.05}]) != base
    assert data_fingerprint([(x, None)]) != data_fingerprint([(x, 0)])
    # a positional None is an argument: model(x, None, mask) is not model(x, mask)
    assert data_fingerprint([(x, None, x)]) != data_fingerprint([(x, x)])


def test_batch_shapes_digest_reads_shapes_and_dtypes_only() -> None:
    x = torch.zeros(3, 4)
    assert batch_shapes_digest([x]) == batch_shapes_digest([torch.ones(3, 4)])
    assert batch_shapes_digest([x]) != batch_shapes_digest([torch.zeros(4, 3)])
    assert batch_shapes_digest([x]) != batch_shapes_digest([x.double()])
    assert batch_shapes_digest([x, x]) != batch_shapes_digest([x])
    assert batch_shapes_digest([{"t": x, "scale": 1.0}]) == batch_shapes_digest([{"t": x, "scale": 2.0}])


def test_structure_digest_follows_the_code_of_the_users_own_module_classes(monkeypatch) -> None:
    """A table scored before ``forward`` was edited (same weights, same modules) was read from the cache after: 300x off
    for a scale inside ``forward``. torch's and transformers' classes are keyed by name alone, as before."""
    import sys

    torch.manual_seed(0)
    block, scaled = _Block(), _Scaled()
    scaled.load_state_dict(block.state_dict())
    assert model_hash(block) == model_hash(scaled) and structure_digest(block) != structure_digest(scaled)
    before = structure_digest(scaled)
    assert structure_digest(_Scaled()) == before  # other weights: the model hash's to tell apart
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 50.0)
    assert structure_digest(scaled) != before
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 1.0)
    assert structure_digest(scaled) == before

    import hashlib

    model = _mlp()  # torch's modules alone: the digest of its class, modules and config, unchanged by this
    text = f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}\n"
    assert structure_digest(model) == hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
