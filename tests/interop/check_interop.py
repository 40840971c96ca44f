"""Checks siam's exports with independent readers (registered with CTest).

usage: check_interop.py safetensors|onnx|onnxruntime FIXTURES_BINARY DEPLOY_MD
       check_interop.py cnn FIXTURES_BINARY DEPLOY_MD MNIST_SIAMESE

safetensors: a file written by siam is read with json + numpy only (no siam code), its
  tensors give siam's embeddings; a file written here loads into siam and gives ours.
onnx: onnx.checker (full check) and OpenCV's DNN module on the exported MLP ([batch, 784]
  and [batch, 1, 28, 28] inputs) and on a graph of every emitter (against NumPy).
onnxruntime: the docs' ONNX Runtime example (exit 77, skipped, where onnxruntime is not
  installed, as on Debian 12).
cnn: a LeNet trained for a few iterations by mnist_siamese, given an L2-normalised output
  (fixtures l2) and exported by `mnist_siamese export`: OpenCV DNN runs the ONNX file and a
  torch.nn.Module of the same structure loads the safetensors file with
  load_state_dict(strict=True); both must give siam's embeddings within 1e-5. Exit 77 only
  when cv2 or torch cannot be imported; any failure to load or run is a failure.
The safetensors and onnx parts run the docs' examples of their kind. Exit 77 (skip) when
numpy, or for the onnx part onnx or cv2, cannot be imported.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

TOL = 1e-4

try:
    import numpy as np
except ImportError:
    print("skipped: numpy is not installed for", sys.executable)
    sys.exit(77)

part, fixtures, deploy_md = sys.argv[1], sys.argv[2], sys.argv[3]
failures = []
CNN_TOL = 1e-5


def check(name, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + name + (f" ({detail})" if detail else ""))
    if not ok:
        failures.append(name)


def close(name, got, want, tol=TOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        check(name, False, f"shape {got.shape} vs {want.shape}")
        return
    err = float(np.max(np.abs(got - want))) if got.size else 0.0
    check(name, err <= tol, f"max |difference| {err:.3g}, tolerance {tol}, n = {len(got)}")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        out[name] = np.frombuffer(data[b:e], {"F32": "<f4", "F64": "<f8"}[t["dtype"]]).reshape(t["shape"])
    return out, meta


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name, a in tensors.items():
        b = np.ascontiguousarray(a, "<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def mlp(w, x):
    for i in (0, 2):
        x = np.maximum(x @ w[f"layers.{i}.weight"].T + w[f"layers.{i}.bias"], 0)
    return x @ w["layers.4.weight"].T + w["layers.4.bias"]


def run_examples(kind_modules, work, want):
    """Runs the deploy.md blocks named in kind_modules ({name: module to import})."""
    blocks = re.findall(r"```python\n(# example: (\w+)\n.*?)```", open(deploy_md).read(), re.S)
    found = {name for _, name in blocks}
    for name in kind_modules:
        check(f"docs/deploy.md has the '{name}' example", name in found)
    for code, name in blocks:
        if name not in kind_modules:
            continue
        try:
            __import__(kind_modules[name])
        except ImportError:
            print(f"skip  docs example '{name}': module {kind_modules[name]} is not installed")
            continue
        cwd = os.getcwd()
        os.chdir(work)
        scope = {}
        try:
            exec(compile(code, f"deploy.md:{name}", "exec"), scope)
        finally:
            os.chdir(cwd)
        close(f"docs example '{name}' gives siam's embeddings", scope["embedding"], want)


def cnn_part(work, example):
    """mnist_siamese --arch cnn -> + L2Normalize -> export -> OpenCV DNN and PyTorch."""
    try:
        import cv2
        import torch
    except ImportError as e:
        print(f"skipped: {e.name} is not installed for {sys.executable} (Debian: python3-opencv, python3-torch)")
        sys.exit(77)

    def run(name, cmd):
        r = subprocess.run(cmd, capture_output=True, text=True)
        check(name, r.returncode == 0, f"exit {r.returncode}" + (f": {r.stderr.strip()[-300:]}" if r.returncode else ""))
        return r

    train = os.path.join(work, "train")
    run("mnist_siamese --arch cnn trains a small model",
        [example, "--arch", "cnn", "--train-size", "200", "--test-size", "50", "--batch-pairs", "16",
         "--iterations", "5", "--eval-every", "5", "--out", train])
    model = os.path.join(work, "cnn_l2.siam")
    r = run("fixtures appends L2Normalize", [fixtures, "l2", os.path.join(train, "model.siam"), model, work])
    print("      model:", r.stdout.strip())
    if failures:
        return
    images = np.fromfile(os.path.join(work, "images.f32"), "<f4").reshape(-1, 1, 28, 28)
    want = np.fromfile(os.path.join(work, "embedding.f32"), "<f4").reshape(len(images), -1)
    check("siam's embeddings are L2-normalised", np.allclose(np.linalg.norm(want, axis=1), 1, atol=1e-5))
    onnx_path, st_path = os.path.join(work, "cnn.onnx"), os.path.join(work, "cnn.safetensors")
    r = subprocess.run([example, "export", "--model", model, "--onnx", onnx_path, "--safetensors", st_path],
                       capture_output=True, text=True)
    has_onnx = "no ONNX export" not in r.stdout + r.stderr
    if not has_onnx:
        print("skip  OpenCV: this build has no ONNX export")
        r = subprocess.run([example, "export", "--model", model, "--safetensors", st_path], capture_output=True, text=True)
    check("mnist_siamese export", r.returncode == 0, (r.stdout + r.stderr).strip()[-400:])

    if has_onnx:
        try:
            net = cv2.dnn.readNetFromONNX(onnx_path)
            net.setInput(images)
            close("OpenCV DNN runs the CNN with L2 output: siam's embeddings", net.forward(), want, CNN_TOL)
        except cv2.error as e:
            check("OpenCV DNN runs the CNN with L2 output: siam's embeddings", False, str(e).strip().splitlines()[-1])

    class Embedding(torch.nn.Module):  # LeNet, as presets::lenet_specs + L2Normalize
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.Sequential(
                torch.nn.Conv2d(1, 20, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2),
                torch.nn.Conv2d(20, 50, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2),
                torch.nn.Flatten(), torch.nn.Linear(800, 500), torch.nn.ReLU(),
                torch.nn.Linear(500, want.shape[1]))

        def forward(self, x):
            return torch.nn.functional.normalize(self.layers(x), dim=1, eps=1e-12)

    tensors, _ = read_safetensors(st_path)
    model_pt = Embedding()
    try:
        model_pt.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()}, strict=True)
        with torch.no_grad():
            got = model_pt(torch.from_numpy(images.copy())).numpy()
        close("PyTorch loads the safetensors file (strict): siam's embeddings", got, want, CNN_TOL)
    except RuntimeError as e:
        check("PyTorch loads the safetensors file (strict): siam's embeddings", False, str(e).replace("\n", " ")[:400])


def onnxruntime_part(work):
    """The docs' ONNX Runtime example; a skip (77) where onnxruntime is not installed."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print(f"skipped: onnxruntime is not installed for {sys.executable} (Debian 12 does not package it)")
        sys.exit(77)
    if not os.path.exists(os.path.join(work, "mlp.onnx")):
        print("skipped: this build has no ONNX export (libonnx-dev/libprotobuf-dev not found)")
        sys.exit(77)


def finish():
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all checks passed")
    sys.exit(0)


if part == "cnn":
    work = tempfile.mkdtemp(prefix="siam-interop-")
    try:
        cnn_part(work, sys.argv[4])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    finish()

work = tempfile.mkdtemp(prefix="siam-interop-")
try:
    subprocess.run([fixtures, "models", work], check=True)
    images = np.fromfile(os.path.join(work, "images.f32"), "<f4").reshape(-1, 784)
    want = np.fromfile(os.path.join(work, "embedding.f32"), "<f4").reshape(len(images), -1)
    np.save(os.path.join(work, "digits.npy"), images.reshape(-1, 1, 28, 28))
    shutil.copy(os.path.join(work, "mlp.safetensors"), os.path.join(work, "model.safetensors"))

    if part == "safetensors":
        w, meta = read_safetensors(os.path.join(work, "mlp.safetensors"))
        check("names", sorted(w) == sorted(f"layers.{i}.{k}" for i in (0, 2, 4) for k in ("weight", "bias")), str(sorted(w)))
        check("PyTorch shapes", w["layers.0.weight"].shape == (1024, 784) and w["layers.4.bias"].shape == (2,))
        check("metadata", meta.get("format") == "pt" and meta.get("architecture", "").startswith("Sequential(Dense(784, 1024)"), str(meta))
        close("json + numpy forward pass of siam's file == siam's embeddings", mlp(w, images), want)
        rng = np.random.default_rng(5)
        mine = {}
        for i, (n_in, n_out) in zip((0, 2, 4), ((784, 1024), (1024, 1024), (1024, 2))):
            mine[f"layers.{i}.weight"] = (rng.standard_normal((n_out, n_in)) * np.sqrt(2 / n_in)).astype("<f4")
            mine[f"layers.{i}.bias"] = (rng.standard_normal(n_out) * 0.1).astype("<f4")
        write_safetensors(os.path.join(work, "py.safetensors"), mine)
        out = os.path.join(work, "py_embedding.f32")
        subprocess.run([fixtures, "embed", os.path.join(work, "py.safetensors"), os.path.join(work, "images.f32"), out], check=True)
        close("a file written by Python loads into siam", np.fromfile(out, "<f4").reshape(len(images), -1), mlp(mine, images))
        run_examples({"numpy": "numpy", "torch": "torch"}, work, want)
    elif part == "onnx":
        try:
            import cv2
            import onnx
        except ImportError as e:
            print(f"skipped: {e.name} is not installed for {sys.executable} (Debian: python3-onnx, python3-opencv)")
            sys.exit(77)
        if not os.path.exists(os.path.join(work, "mlp.onnx")):
            print("skipped: this build has no ONNX export (libonnx-dev/libprotobuf-dev not found)")
            sys.exit(77)
        shutil.copy(os.path.join(work, "mlp.onnx"), os.path.join(work, "model.onnx"))
        for f in ("mlp.onnx", "mlp_nchw.onnx", "emitters_cnn.onnx", "emitters_l2.onnx"):
            m = onnx.load(os.path.join(work, f))
            try:
                onnx.checker.check_model(m, full_check=True)
                check(f"onnx.checker (full) accepts {f}", True, f"opset {m.opset_import[0].version}, IR {m.ir_version}")
            except Exception as e:  # noqa: BLE001 - any checker error is a failure
                check(f"onnx.checker (full) accepts {f}", False, str(e))
        m = onnx.load(os.path.join(work, "mlp.onnx"))
        meta = {p.key: p.value for p in m.metadata_props}
        dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        check("input 'images' [batch, 784], output 'embedding'", m.graph.input[0].name == "images" and dims == ["batch", 784] and m.graph.output[0].name == "embedding", str(dims))
        check("producer and architecture", m.producer_name == "siam" and meta.get("architecture", "").startswith("Sequential(Dense(784"), str(meta))
        net = cv2.dnn.readNetFromONNX(os.path.join(work, "mlp.onnx"))
        net.setInput(images)
        close("OpenCV runs mlp.onnx: siam's embeddings", net.forward(), want)
        net = cv2.dnn.readNetFromONNX(os.path.join(work, "mlp_nchw.onnx"))
        net.setInput(images.reshape(-1, 1, 28, 28))
        close("OpenCV runs mlp_nchw.onnx ([batch, 1, 28, 28]): siam's embeddings", net.forward(), want)

        # The emitters' graphs against NumPy references computed from their own initializers.
        from onnx import numpy_helper

        def emitter_graph(name):
            em = onnx.load(os.path.join(work, name))
            return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in em.graph.initializer}

        def opencv(name, x):
            net = cv2.dnn.readNetFromONNX(os.path.join(work, name))
            net.setInput(x.astype(np.float32))
            return net.forward()

        init = emitter_graph("emitters_cnn.onnx")
        x = images[:20].reshape(20, 1, 28, 28)[:, :, 10:18, 10:18].astype(np.float64)
        cw, cb = init["conv_weight"], init["conv_bias"]
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        conv = np.zeros((20, 3, 8, 8))
        for o in range(3):
            for i in range(3):
                for j in range(3):
                    conv[:, o] += cw[o, 0, i, j] * xp[:, 0, i:i + 8, j:j + 8]
            conv[:, o] += cb[o]
        pool = np.tanh(conv).reshape(20, 3, 4, 2, 4, 2).max(axis=(3, 5))
        ref = 1 / (1 + np.exp(-(pool.reshape(20, 48) @ init["weight"].T + init["bias"])))
        close("OpenCV runs the Conv/Tanh/MaxPool/Flatten/Gemm/Sigmoid emitters == NumPy",
              opencv("emitters_cnn.onnx", x), ref)
        init = emitter_graph("emitters_l2.onnx")
        x = images[:20, 300:306].astype(np.float64) - 0.3
        h = x @ init["weight"].T + init["bias"]
        h = h / np.sqrt((h * h).sum(1, keepdims=True) + init["eps"])
        h = h @ init["weight_1"].T
        ref = h / np.sqrt((h * h).sum(1, keepdims=True))
        close("OpenCV runs the L2 normalisation emitters (eps and none) == NumPy",
              opencv("emitters_l2.onnx", x), ref)
        run_examples({"opencv": "cv2"}, work, want)
    elif part == "onnxruntime":
        onnxruntime_part(work)
        shutil.copy(os.path.join(work, "mlp.onnx"), os.path.join(work, "model.onnx"))
        run_examples({"onnxruntime": "onnxruntime"}, work, want)
    else:
        sys.exit(f"unknown part {part}")
finally:
    shutil.rmtree(work, ignore_errors=True)
finish()
