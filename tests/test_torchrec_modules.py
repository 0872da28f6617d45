"""TorchRec's classes without the parts of TorchRec a run does not use: the same classes, the
same results, and the rest of TorchRec importable after them (a fresh interpreter per check)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
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
    unused = ("tensordict", "torchrec.distributed", "torch._dynamo")
    print("unused:", sorted(m for m in unused if m in sys.modules))

    import importlib.metadata
    import torchrec
    assert torchrec.__version__ == importlib.metadata.version("torchrec")  # the package's own __init__
    assert torchrec.EmbeddingBagCollection is tr.EmbeddingBagCollection
    assert torchrec.KeyedJaggedTensor is tr.KeyedJaggedTensor and torchrec.PoolingType is tr.PoolingType
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    assert EmbeddingBagCollectionSharder().module_type is tr.EmbeddingBagCollection

    from tensordict import TensorDict  # TorchRec's TensorDict input still converts
    nested = torch.nested.nested_tensor([torch.tensor([1]), torch.tensor([2, 3])], layout=torch.jagged)
    assert torch.equal(ebc(TensorDict({"a": nested}, batch_size=[2])).values(), pooled)
    assert load() == tr
    print("ok")
    """
)


def test_torchrec_classes_without_distributed_or_tensordict_then_the_whole_package():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["unused: []", "ok"]
