"""TorchRec's classes without the parts of TorchRec a run does not use: the same classes, the
same results, and the rest of TorchRec importable after them (a fresh interpreter per check)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

LOAD = textwrap.dedent(
    """
    import sys
    import torch
    from towers.torchrec_modules import load

    tr = load()
    kjt = tr.KeyedJaggedTensor.from_lengths_sync(
        keys=["a"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 2], dtype=torch.int32)
    )
    config = tr.EmbeddingBagConfig(
        name="t", embedding_dim=4, num_embeddings=5, feature_names=["a"], pooling=tr.PoolingType.SUM
    )
    ebc = tr.EmbeddingBagCollection(tables=[config])
    pooled = ebc(kjt).values()
    table = ebc.embedding_bags["t"].weight
    assert torch.equal(pooled, torch.stack([table[1], table[2] + table[3]])), pooled
    unused = ("torchrec", "tensordict", "torchrec.distributed", "torch._dynamo")
    print("unused:", sorted(m for m in unused if m in sys.modules))
    early = [m for m in sys.modules if m.startswith("torchrec.")]
    """
)
#: then the rest of TorchRec, through the package or straight from a submodule
THEN = {
    "package": "import torchrec",
    "submodule": "from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder",
}
CHECK = textwrap.dedent(
    """
    import importlib.metadata
    import torchrec
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    assert torchrec.__version__ == importlib.metadata.version("torchrec")
    assert torchrec.EmbeddingBagCollection is tr.EmbeddingBagCollection
    assert torchrec.KeyedJaggedTensor is tr.KeyedJaggedTensor and torchrec.PoolingType is tr.PoolingType
    assert EmbeddingBagCollectionSharder().module_type is tr.EmbeddingBagCollection
    # the modules loaded before their packages are bound on them, as after a plain `import torchrec`
    for name in early:
        parent, _, child = name.rpartition(".")
        assert getattr(sys.modules[parent], child) is sys.modules[name], name
    assert not any(type(f).__module__ == "towers.torchrec_modules" for f in sys.meta_path)

    from tensordict import TensorDict  # TorchRec's TensorDict input still converts
    nested = torch.nested.nested_tensor([torch.tensor([1]), torch.tensor([2, 3])], layout=torch.jagged)
    assert torch.equal(ebc(TensorDict({"a": nested}, batch_size=[2])).values(), pooled)
    assert load() == tr
    print("ok")
    """
)


@pytest.mark.parametrize("then", sorted(THEN))
def test_torchrec_classes_without_the_packages_then_the_whole_of_torchrec(then):
    script = LOAD + THEN[then] + "\n" + CHECK
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["unused: []", "ok"]
