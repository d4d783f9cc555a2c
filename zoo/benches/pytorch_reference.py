#!/usr/bin/env python3
"""PyTorch (and ONNX Runtime) column for the speed table of `anneal bench`.

Times exactly the workloads of `zoo/src/bench.rs` (issue 8) with PyTorch
1.13 at 1 and 2 threads and prints one table -- workload, threads, median ms,
fastest ms, throughput -- with the same workload names as `anneal bench`, so that the
two tables join on (workload, threads). Not part of CI.

Same definitions as `anneal bench`:
  * timing: one warm-up call, then at least 5 calls, continuing while less
    than 0.5 s has passed and fewer than 200 calls were made; the median per
    call is reported;
  * inputs ~ randn (N(0, 1)), targets `i % 10`, layers with PyTorch's
    default initialisation (anneal's layers use the same init);
  * "train step" = forward, cross-entropy (mean), backward, SGD lr 0.01 step
    (gradients start from None each step, as anneal's fresh gradients);
  * "fwd+bwd" = backward of the sum of the output, inputs and weights as
    leaves that require grad; "fwd" = forward under `torch.no_grad()`;
  * conv2d: no bias, stride 1, padding 1; LSTM `batch_first=True`;
    TransformerEncoderLayer d 128, 4 heads, ffn 512, dropout 0,
    `batch_first=True`, post-norm, ReLU. Its "fwd" runs in eval mode under
    no_grad, which is PyTorch 1.13's fused inference path
    (`torch._transformer_encoder_layer_fwd`; same maths since dropout is 0);
  * Linear 1024->1024 batch 64: x ~ randn(64, 1024), W = randn * 0.03, no
    bias; f32 is `F.linear`, dynamic int8 is `torch.ao.quantization.
    quantize_dynamic` (qint8 per-tensor symmetric weights, quint8 dynamic
    activations) on the default quantised engine (onednn here).

ONNX Runtime section: the same Linear as an ONNX `MatMul` with a constant
weight, f32 and `onnxruntime.quantization.quantize_dynamic` (defaults:
weight_type QInt8, activations QUInt8 via DynamicQuantizeLinear,
per_channel False, reduce_range False), timed at each thread count
(intra_op_num_threads = T), reporting int8 speed-up over ORT's own f32. Then
ORT's max abs error against its own f32 output for four input/weight
distributions x {per_channel, reduce_range}:
  (a) x ~ randn, W = randn * 0.03   (what `anneal bench` uses)
  (b) x ~ randn, W = nn.Linear default init  U(-1/32, 1/32)
  (c) x ~ rand [0, 1), W = nn.Linear default init
  (d) x ~ rand [0, 1), W = randn * 0.03

Setup (Debian bookworm, as in shared/REFERENCES.md):
  apt-get update && apt-get install -y --no-install-recommends \\
      python3-torch python3-numpy libopenblas0-openmp
  /usr/bin/python3 -m venv --system-site-packages /work/venv-ort
  /work/venv-ort/bin/pip install onnxruntime==1.32.0 "onnx<1.18" \\
      "numpy<2" "ml_dtypes<0.5"
(Debian's torch 1.13 is built against numpy 1.x: numpy 2 breaks
`tensor.numpy()`, and onnx >= 1.18 / ml_dtypes >= 0.5 require numpy 2;
`onnxruntime.quantization` imports ml_dtypes.) Tested with onnxruntime
1.32.0, onnx 1.17.0, numpy 1.24.2 (Debian) and 1.26.4, ml_dtypes
0.4.1, torch 1.13.1.

Run (from the repository root):
  OPENBLAS_CORETYPE=SkylakeX /work/venv-ort/bin/python \\
      zoo/benches/pytorch_reference.py
Without onnxruntime importable (e.g. plain `/usr/bin/python3`) the ORT
section is skipped. Each thread count runs in its own child process with
OMP_NUM_THREADS=T and torch.set_num_threads(T); OPENBLAS_CORETYPE=SkylakeX
is set for the children if absent (Debian's OpenBLAS 0.3.21 does not
recognise this CPU and would fall back to SSE3 kernels).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

WORKLOAD_ORDER = []  # filled by torch_workloads(); names as in bench.rs


def time_calls(f, min_reps=5):
    """anneal bench's timing rule: warm-up, >= min_reps, up to 0.5 s / 200.

    Returns (median, fastest) seconds per call."""
    f()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (
        time.perf_counter() - start < 0.5 and len(times) < 200
    ):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], times[0]


def gflops(flop, unit="GFLOP/s"):
    return lambda s: f"{flop / s / 1e9:.1f} {unit}"


def per_second(n, unit):
    return lambda s: f"{n / s:.0f} {unit}/s"


def torch_workloads():
    """(name, callable, throughput) exactly as zoo/src/bench.rs."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.manual_seed(0)
    out = []

    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    out.append(("sgemm 1024³", lambda: torch.matmul(a, b), gflops(2.0 * 1024**3)))

    x = torch.randn(32, 32, 28, 28)
    w = torch.randn(64, 32, 3, 3)
    conv_flop = 2.0 * 32 * 64 * 32 * 9 * 784

    def conv_fwd():
        with torch.no_grad():
            F.conv2d(x, w, None, 1, 1)

    out.append(("conv2d fwd N32 C32→64 28×28 3×3", conv_fwd, gflops(conv_flop)))

    def conv_fwd_bwd():
        xv = x.detach().requires_grad_(True)
        wv = w.detach().requires_grad_(True)
        F.conv2d(xv, wv, None, 1, 1).sum().backward()

    out.append(("conv2d fwd+bwd, same", conv_fwd_bwd, gflops(3.0 * conv_flop)))

    def train_step(model, opt, xb, tb):
        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), tb)
            loss.backward()
            opt.step()

        return step

    mlp = nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )
    xm = torch.randn(128, 784)
    tm = torch.arange(128) % 10
    out.append((
        "MLP 784-512-512-10 b128 train step",
        train_step(mlp, torch.optim.SGD(mlp.parameters(), lr=0.01), xm, tm),
        per_second(128.0, "samples"),
    ))

    cnn = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    xc = torch.randn(64, 1, 28, 28)
    tc = torch.arange(64) % 10
    out.append((
        "CNN 28×28 b64 train step",
        train_step(cnn, torch.optim.SGD(cnn.parameters(), lr=0.01), xc, tc),
        per_second(64.0, "samples"),
    ))

    def fwd_no_grad(module, xin):
        def f():
            with torch.no_grad():
                module(xin)

        return f

    def fwd_bwd(module, xin, pick):
        params = list(module.parameters())

        def f():
            for p in params:
                p.grad = None
            xv = xin.detach().requires_grad_(True)
            pick(module(xv)).sum().backward()

        return f

    lstm = nn.LSTM(64, 128, batch_first=True)
    xl = torch.randn(32, 50, 64)
    out.append((
        "LSTM in64 h128 seq50 b32 fwd",
        fwd_no_grad(lstm, xl),
        per_second(32.0, "sequences"),
    ))
    out.append((
        "LSTM in64 h128 seq50 b32 fwd+bwd",
        fwd_bwd(lstm, xl, lambda o: o[0]),
        per_second(32.0, "sequences"),
    ))

    enc = nn.TransformerEncoderLayer(
        128, 4, dim_feedforward=512, dropout=0.0, batch_first=True
    )
    enc_eval = nn.TransformerEncoderLayer(
        128, 4, dim_feedforward=512, dropout=0.0, batch_first=True
    )
    enc_eval.load_state_dict(enc.state_dict())
    enc_eval.eval()
    xt = torch.randn(16, 64, 128)
    out.append((
        "Transformer layer d128 h4 ffn512 seq64 b16 fwd",
        fwd_no_grad(enc_eval, xt),
        per_second(16.0, "sequences"),
    ))
    out.append((
        "Transformer layer … fwd+bwd",
        fwd_bwd(enc, xt, lambda o: o),
        per_second(16.0, "sequences"),
    ))

    wl = torch.randn(1024, 1024) * 0.03
    xq = torch.randn(64, 1024)
    lin_flop = 2.0 * 64 * 1024 * 1024

    def lin_f32():
        with torch.no_grad():
            F.linear(xq, wl)

    out.append(("Linear 1024→1024 b64 f32", lin_f32, gflops(lin_flop)))

    lin = nn.Linear(1024, 1024, bias=False)
    with torch.no_grad():
        lin.weight.copy_(wl)
    qlin = torch.ao.quantization.quantize_dynamic(
        nn.Sequential(lin), {nn.Linear}, dtype=torch.qint8
    )

    def lin_int8():
        with torch.no_grad():
            qlin(xq)

    out.append((
        "Linear 1024→1024 b64 dynamic int8", lin_int8, gflops(lin_flop, "GOP/s"),
    ))
    return out


def ort_linear_model(w):
    """ONNX graph Y = X · Wᵀ as MatMul with a constant [K, N] weight."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n, k = w.shape
    wt = numpy_helper.from_array(np.ascontiguousarray(w.T), name="Wt")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "Wt"], ["Y"])],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, n])],
        [wt],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def ort_sessions(w, threads, per_channel=False, reduce_range=False):
    """(f32 session, dynamic-int8 session) for Y = X · Wᵀ."""
    import logging

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic logs a "consider pre-processing" warning per call.
    logging.getLogger().setLevel(logging.ERROR)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as d:
        f32_path = os.path.join(d, "linear.onnx")
        q_path = os.path.join(d, "linear.int8.onnx")
        onnx.save(ort_linear_model(w), f32_path)
        quantize_dynamic(
            f32_path, q_path, per_channel=per_channel,
            reduce_range=reduce_range, weight_type=QuantType.QInt8,
        )
        prov = ["CPUExecutionProvider"]
        return (
            ort.InferenceSession(f32_path, opts, providers=prov),
            ort.InferenceSession(q_path, opts, providers=prov),
        )


def ort_rows(threads):
    """ORT f32 and default dynamic-int8 Linear timings on setting (a)."""
    import torch

    torch.manual_seed(1)
    w = (torch.randn(1024, 1024) * 0.03).numpy()
    x = torch.randn(64, 1024).numpy()
    f32, q = ort_sessions(w, threads)
    lin_flop = 2.0 * 64 * 1024 * 1024
    rows = []
    for name, sess, unit in (
        ("ORT Linear 1024→1024 b64 f32", f32, "GFLOP/s"),
        ("ORT Linear 1024→1024 b64 dynamic int8", q, "GOP/s"),
    ):
        m, fastest = time_calls(lambda s=sess: s.run(None, {"X": x}))
        rows.append(dict(workload=name, threads=threads, median_s=m,
                         min_s=fastest, throughput=gflops(lin_flop, unit)(m)))
    return rows


def ort_errors():
    """ORT's max |int8 − f32| on the four distributions of the docstring."""
    import numpy as np
    import torch

    settings = []
    for tag, xdist, wdist in (
        ("a", "randn", "randn*0.03"),
        ("b", "randn", "nn.Linear init"),
        ("c", "rand[0,1)", "nn.Linear init"),
        ("d", "rand[0,1)", "randn*0.03"),
    ):
        torch.manual_seed(2)
        if wdist == "randn*0.03":
            w = torch.randn(1024, 1024) * 0.03
        else:
            w = torch.nn.Linear(1024, 1024, bias=False).weight.detach().clone()
        x = torch.randn(64, 1024) if xdist == "randn" else torch.rand(64, 1024)
        w, x = w.numpy(), x.numpy()
        ref = (x.astype(np.float64) @ w.T.astype(np.float64))
        for per_channel in (False, True):
            for reduce_range in (False, True):
                f32, q = ort_sessions(w, 1, per_channel, reduce_range)
                y32 = f32.run(None, {"X": x})[0]
                yq = q.run(None, {"X": x})[0]
                settings.append(dict(
                    setting=tag, x=xdist, w=wdist, per_channel=per_channel,
                    reduce_range=reduce_range,
                    max_abs_err=float(np.max(np.abs(yq - y32))),
                    max_abs_err_f64=float(np.max(np.abs(yq - ref))),
                    mean_abs_err=float(np.mean(np.abs(yq - y32))),
                    max_abs_y=float(np.max(np.abs(y32))),
                ))
    return settings


def child(threads, with_ort):
    import torch

    torch.set_num_threads(threads)
    rows = []
    for name, f, tput in torch_workloads():
        m, fastest = time_calls(f)
        rows.append(dict(workload=name, threads=threads, median_s=m,
                         min_s=fastest, throughput=tput(m)))
    if with_ort:
        rows.extend(ort_rows(threads))
    blas = sorted({
        line.split()[-1] for line in open("/proc/self/maps")
        if "blas" in line and line.split()[-1].startswith("/")
    })
    print(json.dumps(dict(rows=rows, blas=blas, torch=torch.__version__,
                          qengine=torch.backends.quantized.engine)))


def have_ort():
    try:
        import onnxruntime  # noqa: F401
        import onnxruntime.quantization  # noqa: F401
        import onnx  # noqa: F401
        return True
    except ImportError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2",
                    help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--no-ort", action="store_true",
                    help="skip the ONNX Runtime section")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    with_ort = not args.no_ort and have_ort()
    if args.child is not None:
        child(args.child, with_ort)
        return

    rows, info = [], None
    for t in [int(s) for s in args.threads.split(",")]:
        env = dict(os.environ, OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t))
        env.setdefault("OPENBLAS_CORETYPE", "SkylakeX")
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(t)]
        if not with_ort:
            cmd.append("--no-ort")
        res = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE,
                             text=True)
        info = json.loads(res.stdout.strip().splitlines()[-1])
        rows.extend(info["rows"])

    print(f"# torch {info['torch']}, quantised engine {info['qengine']}, "
          f"BLAS {', '.join(info['blas']) or 'none mapped'}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'SkylakeX')}")
    order = []
    for r in rows:
        if r["workload"] not in order:
            order.append(r["workload"])
    rows.sort(key=lambda r: (order.index(r["workload"]), r["threads"]))
    wn = max(len(r["workload"]) for r in rows)
    print(f"{'workload':<{wn}}  threads  {'median ms':>10}  {'fastest ms':>10}"
          "  throughput")
    for r in rows:
        print(f"{r['workload']:<{wn}}  {r['threads']:>7}  "
              f"{r['median_s'] * 1e3:>10.3f}  {r['min_s'] * 1e3:>10.3f}  "
              f"{r['throughput']}")

    by = {(r["workload"], r["threads"]): r["median_s"] for r in rows}
    print()
    for t in sorted({r["threads"] for r in rows}):
        for prefix in ("", "ORT "):
            f32 = by.get((prefix + "Linear 1024→1024 b64 f32", t))
            q = by.get((prefix + "Linear 1024→1024 b64 dynamic int8", t))
            if f32 and q:
                who = "ONNX Runtime" if prefix else "PyTorch"
                print(f"{who} dynamic int8 speed-up over its own f32, "
                      f"{t} thread(s): {f32 / q:.2f}×")

    if with_ort:
        import onnxruntime

        print(f"\n# ONNX Runtime {onnxruntime.__version__} quantize_dynamic "
              "(weight_type QInt8, activations QUInt8): max |int8 − f32| "
              "on Linear 1024→1024 b64, 1 thread")
        print("setting  x          W               per_channel  reduce_range"
              "  max_abs_err  (vs f64)  mean_abs_err   max|y|  max_err/max|y|")
        for e in ort_errors():
            print(f"({e['setting']})      {e['x']:<10} {e['w']:<15} "
                  f"{str(e['per_channel']):<12} {str(e['reduce_range']):<12}  "
                  f"{e['max_abs_err']:.5f}      {e['max_abs_err_f64']:.5f}"
                  f"   {e['mean_abs_err']:.5f}      {e['max_abs_y']:.3f}"
                  f"   {e['max_abs_err'] / e['max_abs_y']:.5f}")
    else:
        print("\n# onnxruntime not importable: ORT section skipped "
              "(see the docstring for its setup)")


if __name__ == "__main__":
    main()
