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
     within 1e-5, and siam's re-saved file holds exactly PyTorch's tensors;
  3. siam's ONNX export of the same network (resnet.onnx, where siam is built with ONNX
     export) passes onnx.checker (full), has exactly the ops its specs export as (no Dropout),
     uses every initializer, and, run node by node by the small evaluator below (torch
     functions; any op, attribute or attribute value it does not implement fails the check,
     naming it), gives siam's embeddings within 1e-5; and OpenCV's DNN module (where
     python3-opencv is installed) runs the file and gives them within 1e-5 too.
Exit 77 (skipped) when numpy or torch cannot be imported; part 3 alone is skipped, with a
message, when siam was built without ONNX export or the onnx module is missing.
"""
import collections
import copy
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
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


# ---- ONNX: a small evaluator for the ops siam's layers export (opset 13..17 semantics)

class Unsupported(Exception):
    """An op, attribute or attribute value the evaluator does not implement."""


def _conv(ins, a):
    x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    nd = w.dim() - 2
    if nd != 2:
        raise Unsupported(f"Conv with a {nd}-D kernel (only 2-D is implemented)")
    if a["auto_pad"] != "NOTSET":
        raise Unsupported(f"Conv auto_pad {a['auto_pad']!r} (only NOTSET is implemented)")
    if a["kernel_shape"] is not None and list(a["kernel_shape"]) != list(w.shape[2:]):
        raise Unsupported(f"Conv kernel_shape {a['kernel_shape']} differs from the weight's {list(w.shape[2:])}")
    pads = a["pads"] or [0] * (2 * nd)
    strides, dilations = a["strides"] or [1] * nd, a["dilations"] or [1] * nd
    if len(pads) != 2 * nd or len(strides) != nd or len(dilations) != nd:
        raise Unsupported(f"Conv pads {pads}, strides {strides}, dilations {dilations} for a {nd}-D kernel")
    # ONNX pads: [h_begin, w_begin, h_end, w_end]; F.pad: (w_begin, w_end, h_begin, h_end).
    x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    return F.conv2d(x, w, b, stride=list(strides), dilation=list(dilations), groups=a["group"])


def _batch_norm(ins, a):
    if a["training_mode"] != 0:
        raise Unsupported(f"BatchNormalization training_mode {a['training_mode']}")
    x, scale, bias, mean, var = ins
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a["epsilon"])


def _flatten(ins, a):
    x, axis = ins[0], a["axis"]
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _gemm(ins, a):
    A, B = ins[0], ins[1]
    if A.dim() != 2 or B.dim() != 2:
        raise Unsupported(f"Gemm of {A.dim()}-D and {B.dim()}-D operands (ONNX requires 2-D)")
    A, B = (A.T if a["transA"] else A), (B.T if a["transB"] else B)
    y = a["alpha"] * (A @ B)
    return y + a["beta"] * ins[2] if len(ins) > 2 and ins[2] is not None else y


def _reduce_l2(ins, a):
    x = ins[0]
    axes = tuple(a["axes"]) if a["axes"] is not None else tuple(range(x.dim()))
    return torch.linalg.vector_norm(x, 2, dim=axes, keepdim=bool(a["keepdims"]))


# op type: (function, {attribute: default}, allowed input counts). Attributes are the
# opset-13 ones the function honours; anything else on a node is refused.
ONNX_OPS = {
    "Conv": (_conv, {"auto_pad": "NOTSET", "dilations": None, "group": 1, "kernel_shape": None,
                     "pads": None, "strides": None}, (2, 3)),
    "BatchNormalization": (_batch_norm, {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0}, (5,)),
    "Relu": (lambda ins, a: F.relu(ins[0]), {}, (1,)),
    "Add": (lambda ins, a: ins[0] + ins[1], {}, (2,)),
    "Div": (lambda ins, a: ins[0] / ins[1], {}, (2,)),
    "GlobalAveragePool": (lambda ins, a: ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True), {}, (1,)),
    "Flatten": (_flatten, {"axis": 1}, (1,)),
    "Gemm": (_gemm, {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}, (2, 3)),
    "MatMul": (lambda ins, a: torch.matmul(ins[0], ins[1]), {}, (2,)),
    "ReduceL2": (_reduce_l2, {"axes": None, "keepdims": 1}, (1,)),
}


def run_onnx(model, inputs):
    """The graph's outputs for {input name: tensor}, computed in float64 node by node.
    Raises Unsupported (naming the node) for anything the evaluator does not implement,
    and ValueError for a value used before it is made or an op that fails."""
    from onnx import helper, numpy_helper
    opsets = {o.domain: o.version for o in model.opset_import}
    if not 13 <= opsets.get("", opsets.get("ai.onnx", 0)) <= 17:
        raise Unsupported(f"opset imports {opsets} (the evaluator implements opset 13..17)")
    g = model.graph
    env = {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float64)) for t in g.initializer}
    env.update({k: v.to(torch.float64) for k, v in inputs.items()})
    for i, node in enumerate(g.node):
        where = f"node {i} {node.op_type} '{node.name}'"
        if node.domain not in ("", "ai.onnx"):
            raise Unsupported(f"{where}: domain '{node.domain}'")
        if node.op_type not in ONNX_OPS:
            raise Unsupported(f"{where}: op type {node.op_type} is not implemented")
        fn, defaults, n_inputs = ONNX_OPS[node.op_type]
        attrs = dict(defaults)
        for at in node.attribute:
            if at.name not in defaults:
                raise Unsupported(f"{where}: attribute '{at.name}' is not implemented")
            v = helper.get_attribute_value(at)
            attrs[at.name] = v.decode() if isinstance(v, bytes) else v
        names = list(node.input)
        while names and names[-1] == "":  # trailing optional inputs left out
            names.pop()
        if len(names) not in n_inputs or "" in names:
            raise Unsupported(f"{where}: inputs {list(node.input)} (expects {' or '.join(map(str, n_inputs))})")
        if len(node.output) != 1:
            raise Unsupported(f"{where}: {len(node.output)} outputs (only the one-output form is implemented)")
        missing = [n for n in names if n not in env]
        if missing:
            raise ValueError(f"{where}: input {missing} is not a graph input, initializer or earlier output")
        try:
            env[node.output[0]] = fn([env[n] for n in names], attrs)
        except Unsupported as e:
            raise Unsupported(f"{where}: {e}") from None
        except RuntimeError as e:
            raise ValueError(f"{where} fails: {str(e).splitlines()[0]}") from None
    return [env[o.name] for o in g.output]


# What each layer kind of the specs is exported as (the layers' emit()); a Dense after
# GlobalAvgPool sees 1-D examples, so no Flatten of its own.
EXPORTED_AS = {"Conv2D": ["Conv"], "BatchNorm": ["BatchNormalization"], "ReLU": ["Relu"],
               "Residual": ["Add"], "GlobalAvgPool": ["GlobalAveragePool", "Flatten"],
               "Dense": ["Gemm"], "L2Normalize": ["ReduceL2", "Div"]}


def onnx_part(path, fixture_said, specs, images, siam_embedding):
    if not os.path.exists(path):
        if "onnx: not built" in fixture_said:
            print("skip  ONNX: siam is built without ONNX export (SIAM_ONNX=OFF, or libonnx-dev/libprotobuf-dev not found)")
        else:
            check("resnet_fixture wrote resnet.onnx", False, f"its output: {fixture_said.strip()!r}")
        return
    try:
        import onnx
    except ImportError as e:
        print(f"skip  ONNX: {e} for {sys.executable} (Debian: python3-onnx)")
        return
    model = onnx.load(path)
    try:
        onnx.checker.check_model(model, full_check=True)
        check("onnx.checker (full) accepts resnet.onnx", True, f"opset {model.opset_import[0].version}")
    except Exception as e:  # noqa: BLE001 - any checker error is a failure
        check("onnx.checker (full) accepts resnet.onnx", False, str(e).strip().splitlines()[0])
    g = model.graph
    dims = [d.dim_param or d.dim_value for d in g.input[0].type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in g.output[0].type.tensor_type.shape.dim]
    check("input 'images' [batch, 1, 12, 12], output 'embedding' [batch, 8]",
          [i.name for i in g.input] == ["images"] and dims == ["batch", 1, 12, 12]
          and [o.name for o in g.output] == ["embedding"] and out_dims == ["batch", siam_embedding.shape[1]],
          f"{dims} -> {out_dims}")
    ops = collections.Counter(n.op_type for n in g.node)
    want = collections.Counter(op for kind, _ in specs for op in EXPORTED_AS[kind])
    check("no Dropout node", "Dropout" not in ops)
    check("the graph's ops are those its layer specs export as", ops == want,
          f"extra {dict(ops - want)}, missing {dict(want - ops)}" if ops != want else dict(ops))
    used = {i for n in g.node for i in n.input}
    unused = [t.name for t in g.initializer if t.name not in used]
    check("every initializer is an input of a node", not unused, str(unused))

    # The evaluator refuses what it does not implement (so it cannot ignore it silently).
    for what, plant, words in (
            ("an attribute", lambda m: m.graph.node[0].attribute.append(onnx.helper.make_attribute("foo", 1)),
             ("Conv", "'foo'")),
            ("an op type", lambda m: setattr(m.graph.node[2], "op_type", "LeakyRelu"), ("LeakyRelu",)),
            ("an attribute value", lambda m: m.graph.node[1].attribute.append(
                onnx.helper.make_attribute("training_mode", 1)), ("BatchNormalization", "training_mode 1"))):
        m = copy.deepcopy(model)
        plant(m)
        try:
            run_onnx(m, {"images": torch.from_numpy(images)})
            check(f"the evaluator refuses {what} it does not implement", False, "it ran")
        except Unsupported as e:
            check(f"the evaluator refuses {what} it does not implement", all(w in str(e) for w in words), str(e))

    try:
        (got,) = run_onnx(model, {"images": torch.from_numpy(images)})
        close("resnet.onnx run op by op (torch, float64) gives siam's embeddings", got.numpy(), siam_embedding)
    except (Unsupported, ValueError) as e:
        check("resnet.onnx run op by op (torch, float64) gives siam's embeddings", False, str(e))

    # An inference runtime of its own: OpenCV's DNN module reads the file and runs it in float.
    try:
        import cv2
    except ImportError as e:
        print(f"skip  OpenCV: {e} for {sys.executable} (Debian: python3-opencv)")
        return
    try:
        net = cv2.dnn.readNetFromONNX(path)
        net.setInput(images.astype(np.float32))
        got = net.forward()
    except cv2.error as e:
        check("OpenCV's DNN module runs resnet.onnx", False, str(e).strip().splitlines()[-1])
        return
    close(f"OpenCV {cv2.__version__} runs resnet.onnx (float) and gives siam's embeddings", got, siam_embedding)


def close(name, got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        check(name, False, f"shape {got.shape}, expected {want.shape}")
        return
    err = float(np.max(np.abs(got - want)))
    check(name, err <= TOL, f"max |difference| {err:.3g}, tolerance {TOL}")


def main():
    fixture = sys.argv[1]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        said = subprocess.run([fixture, "save", work], check=True, capture_output=True, text=True).stdout
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

        # 3. siam's ONNX export of the same network, run op by op.
        onnx_part(os.path.join(work, "resnet.onnx"), said, specs, images, siam_embedding)

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
