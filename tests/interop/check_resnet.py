"""A ResNet with BatchNorm and residual blocks between siam and PyTorch (CTest: interop_resnet).

usage: check_resnet.py RESNET_FIXTURE

The torch.nn.Module is built from siam's layer specs (nn::resnet_specs, written by
`resnet_fixture save` one layer per line): a `layers` nn.Sequential whose Residual blocks are
modules with `body` and `projection` nn.Sequential children. Checks:
  1. it loads siam's safetensors file (parameters and BatchNorm buffers, num_batches_tracked
     as I64) with load_state_dict(strict=True) and, in eval mode, gives siam's embeddings
     within 1e-5;
  2. after PyTorch trains it a few steps (new weights, running statistics and counts), its
     state_dict saved as safetensors loads into siam, whose embeddings match PyTorch's
     within 1e-5, and siam's re-saved file holds exactly PyTorch's tensors.
Exit 77 (skipped) when numpy or torch cannot be imported.
"""
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError as e:
    print("skipped:", e, "for", sys.executable)
    sys.exit(77)

TOL = 1e-5
DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8"}
failures = []


def check(name, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + name + (f" ({detail})" if detail else ""))
    if not ok:
        failures.append(name)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        a = np.frombuffer(data[b:e], DTYPES[t["dtype"]]).reshape(t["shape"])
        out[name] = torch.from_numpy(a.copy())
    return out


def write_safetensors(path, state):
    header, blobs, offset = {}, [], 0
    for name, t in state.items():
        a = t.detach().cpu().numpy()
        dtype = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}[a.dtype]
        b = np.ascontiguousarray(a, DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


class Residual(torch.nn.Module):
    def __init__(self, body, projection):
        super().__init__()
        self.body, self.projection = torch.nn.Sequential(*body), torch.nn.Sequential(*projection)

    def forward(self, x):
        return self.body(x) + (self.projection(x) if len(self.projection) else x)


class GlobalAvgPool(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class L2Normalize(torch.nn.Module):
    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def forward(self, x):
        return torch.nn.functional.normalize(x, dim=1, eps=self.eps)


def parse(line):
    kind, *args = line.split()
    return kind, {k: float(v) for k, v in (a.split("=") for a in args)}


def build(specs):
    """Modules from spec lines; a Residual consumes its body and projection layers."""
    def one(it):
        kind, a = next(it)
        if kind == "Conv2D":
            return torch.nn.Conv2d(int(a["in"]), int(a["out"]), int(a["kernel"]), int(a.get("stride", 1)),
                                   int(a.get("padding", 0)), bias=bool(a.get("bias", 1)))
        if kind == "BatchNorm":
            return torch.nn.BatchNorm2d(int(a["features"]), eps=a["eps"], momentum=a["momentum"])
        if kind == "ReLU":
            return torch.nn.ReLU()
        if kind == "GlobalAvgPool":
            return GlobalAvgPool()
        if kind == "Dense":
            return torch.nn.Linear(int(a["in"]), int(a["out"]))
        if kind == "L2Normalize":
            return L2Normalize(a["eps"])
        if kind == "Residual":
            body = [one(it) for _ in range(int(a["body"]))]
            return Residual(body, [one(it) for _ in range(int(a["projection"]))])
        raise ValueError("unknown layer " + kind)

    it = iter(specs)
    layers = []
    while True:
        try:
            layers.append(one(it))
        except StopIteration:
            break
    net = torch.nn.Module()
    net.layers = torch.nn.Sequential(*layers)
    net.forward = lambda x: net.layers(x)
    return net


def close(name, got, want):
    err = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
    check(name, err <= TOL, f"max |difference| {err:.3g}, tolerance {TOL}")


def main():
    fixture = sys.argv[1]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([fixture, "save", work], check=True)
        with open(os.path.join(work, "specs.txt")) as f:
            specs = [parse(line) for line in f if line.strip()]
        net = build(specs)
        images = np.fromfile(os.path.join(work, "images.f32"), "<f4").reshape(-1, 1, 12, 12)
        siam_embedding = np.fromfile(os.path.join(work, "siam_embedding.f32"), "<f4").reshape(len(images), -1)

        # 1. siam's file into PyTorch.
        state = read_safetensors(os.path.join(work, "siam.safetensors"))
        check("siam's file holds every tensor of the module's state_dict, and no other",
              set(state) == set(net.state_dict()), str(sorted(set(state) ^ set(net.state_dict()))))
        counts = [k for k in state if k.endswith("num_batches_tracked")]
        check("num_batches_tracked is an int64 scalar, 3 after three batches",
              counts and all(state[k].dtype == torch.int64 and state[k].shape == () and int(state[k]) == 3
                             for k in counts))
        net.load_state_dict(state, strict=True)
        net.eval()
        with torch.no_grad():
            ours = net(torch.from_numpy(images)).numpy()
        close("PyTorch (eval) on siam's weights gives siam's embeddings", ours, siam_embedding)

        # 2. PyTorch's file into siam: train a few steps so every tensor changes.
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            net(torch.randn(8, 1, 12, 12)).sum().backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            ours = net(torch.from_numpy(images)).numpy()
        torch_file = os.path.join(work, "torch.safetensors")
        write_safetensors(torch_file, net.state_dict())
        subprocess.run([fixture, "load", work, torch_file], check=True)
        loaded = np.fromfile(os.path.join(work, "loaded_embedding.f32"), "<f4").reshape(len(images), -1)
        close("siam (inference) on PyTorch's weights gives PyTorch's embeddings", loaded, ours)
        resaved = read_safetensors(os.path.join(work, "resaved.safetensors"))
        sd = net.state_dict()
        check("siam re-saves PyTorch's tensors exactly (counts 5)",
              set(resaved) == set(sd) and all(torch.equal(resaved[k], sd[k]) for k in sd)
              and all(int(sd[k]) == 5 for k in counts))
    if failures:
        print("FAILED:", ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
