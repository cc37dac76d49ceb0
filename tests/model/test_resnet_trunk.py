"""rsicrc's copy of the CLIP ResNet trunk is open_clip's: same keys, same shapes, same output."""
import subprocess
import sys

import pytest
import torch
from torch import nn

from rsicrc.model.net.resnet_trunk import resnet_trunk


def _open_clip_trunk(layers, width):
    from open_clip.modified_resnet import ModifiedResNet

    tower = ModifiedResNet(layers=layers, output_dim=64, heads=2, image_size=64, width=width)
    return nn.Sequential(*list(tower.children())[:14])


@pytest.mark.parametrize("layers,width", [([3, 4, 6, 3], 64), ([1, 2, 1, 2], 16)])
def test_trunk_has_open_clips_keys_shapes_and_output(layers, width):
    torch.manual_seed(0)
    theirs = _open_clip_trunk(layers, width).eval()
    with torch.no_grad():  # open_clip zeroes every bn3 weight; random ones make each block count
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.1)
        for name, buf in theirs.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
            elif name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.1)
    state = theirs.state_dict()
    ours = resnet_trunk(layers, width).eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in state.items()}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_loading_a_resnet_model_imports_no_open_clip(checkpoint_factory):
    """open_clip (with torchvision, torch._dynamo, transformers) is seconds of import that every
    worker start would pay; a ResNet RSICRC does not need it."""
    code = ("import sys; from rsicrc.model import load_model; load_model(sys.argv[1], device='cpu');"
            "print(sorted(m for m in ('open_clip', 'torchvision', 'transformers', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(checkpoint_factory("rn50-small"))],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
