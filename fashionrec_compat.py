"""Make torchvision importable next to a CPU-only torch (pytorch/vision#9337).

The only torchvision wheel for torch 2.13.0 is a CUDA build whose compiled ops are missing on a CPU torch, so
`import torchvision` fails with "operator torchvision::nms does not exist". That breaks open_clip, timm and, through
transformers' lazy imports, peft. A `.pth` file installed with this project calls `install()` at interpreter start.
It only adds a cheap import hook: when torchvision is first imported, the two missing operator schemas are registered
with `torch.library` so the import succeeds (only `torchvision.ops.nms` itself then raises). With a CUDA torch nothing
is changed.
"""

from __future__ import annotations

import importlib.abc
import sys

_LIB = None  # keeps the torch.library.Library alive


def register_missing_ops() -> bool:
    """Define torchvision::nms/qnms if torch cannot provide them. Returns True when it defined them."""
    global _LIB
    import torch

    if _LIB is not None or torch.version.cuda is not None:
        return False
    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return False
    except RuntimeError:
        pass
    _LIB = torch.library.Library("torchvision", "DEF")  # noqa: TOR901
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    return True


class _TorchvisionHook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname == "torchvision":
            sys.meta_path.remove(self)
            try:
                register_missing_ops()
            except Exception:  # never break interpreter start-up over this
                pass
        return None


def install() -> None:
    if not any(isinstance(f, _TorchvisionHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TorchvisionHook())
