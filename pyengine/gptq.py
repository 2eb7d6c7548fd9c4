"""GPTQ weight rounding for INT8 (``weight_rounding="gptq"``, the default).

Rounding each int8 weight to its nearest level minimizes the weights' own
error, not the layer's: for a conv or Gemm y = W x, what the network sees is
the output error (W - W_q) x. GPTQ (Frantar et al., "GPTQ: Accurate
Post-Training Quantization for Generative Pre-trained Transformers", 2022,
after Optimal Brain Quantization) rounds the input columns of W one at a
time and moves each column's rounding error onto the columns not yet
rounded, weighted by the inverse of the inputs' second moments
H = E[x x^T], so that the layer's output error on the calibration inputs is
(approximately) least-squares minimal.

What stays as it was: the per-channel scales (amax / 127, so the Q/DQ model
and TensorRT's view of it are unchanged), the clamp to [-127, 127], and the
calibration table. Only the int8 weight values differ from nearest rounding.

The statistics come from the calibration pass itself: a tap on the float
run (``_core.Calibrator(..., tap=...)``) hands each weighted layer's input
tensor to a :class:`GramCollector`, which samples output positions, gathers
their input patches (im2col columns) and accumulates H per layer and group.
Float inputs rather than quantized ones: measured on the trained families of
tests/torch_models.py, the two give the same rounding within noise.

Measured (tests/torch_models.py's small forms trained on real crops, 1000
held-out crops, logits relative L2 error against FP32, nearest -> GPTQ):
CIFAR ResNet with stochastic depth 0.0162 -> 0.0080 (its INT8 error is mostly
the weights'), pre-activation ResNet-50 0.0163 -> 0.0157, IBN-Net 0.0171 ->
0.0166, ResNet-50 0.0366 -> 0.0346 (there the activations' rounding
dominates); README's INT8 section has the full table. Per layer, GPTQ leaves
2-50% of nearest rounding's output error.

Bias correction on top was measured and not kept: each layer's bias moved by
W E[x] - W_q E[Q(x)] (the means of the float inputs' sampled im2col columns
and of their fake-quantized values, the layer's own input scale), on five of
those trained families (ResNet-50, RMNet-18, residual attention,
pre-activation ResNet-50, CIFAR ResNet-110) and 1300 held-out crops each:
logits error -3% to +3% (ResNet-50 0.0355 -> 0.0356, residual attention
0.0144 -> 0.0140, CIFAR ResNet-110 0.0073 -> 0.0075) and agreement within a
few crops either way: the error left is the activations' zero-mean rounding,
not a shift.
"""

from __future__ import annotations

import math

import numpy as np

from . import _core

# Quantized levels of a symmetric int8 weight (engine/quant/quantize_weights.h).
QMAX = 127
# Output positions sampled per image and layer: enough columns that H is
# well determined (at least 2K over 64 images, for K inputs), at most every
# position.
MIN_COLUMNS = 2048
ASSUMED_IMAGES = 64
# GPTQ's damping (a fraction of H's mean diagonal added to it).
# 0.1 rather than the paper's 0.01: on the CIFAR ResNet-20 of
# tests/test_int8_realdata.py 0.01 ended 4% above nearest rounding's logits
# error and 0.1 5% below; on the other models measured the two are within 2%.
DAMPING = 0.1
# The block: columns rounded one by one (each updating the block's later
# columns), then one product carries the block's errors to the rest. The
# result is the same for any width (up to float rounding). 32 rather than the
# paper's 128 was chosen while the per-column work was numpy: M x K = 2048 x
# 512 0.42 -> 0.07 s, 512 x 4608 1.05 -> 0.80 s (Zen 4, same output error to
# 5 digits). With that sweep in C++ (quant/gptq_block.h) 128 is faster again
# (512 x 4608 1.00 -> 0.77 s, 256 x 2304 0.30 -> 0.19 s, output error equal to
# 5 digits); not changed yet: it moves int8 weights at float-rounding level,
# so the family agreement measurements would be redone with it.
BLOCK = 32
# Sampled columns wait per layer until they hold about this many floats (16
# MB), then one product adds them to H. Each product reads and writes all
# K^2 entries of H (ResNet-50's last 3x3 convs: K = 4608, 85 MB), so one
# product per image was bound by that traffic: 144 columns and 576 took the
# same 0.11 s there (Zen 4, 2 threads).
BUFFER_FLOATS = 1 << 22

_WEIGHTED = {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul"}


def _attr(node, name, default):
    value = node["attrs"].get(name)
    return default if value is None else value[1]


class _Layer:
    """One weighted node: how to turn its input tensor into im2col columns
    (rows of X, K = inputs per group), and H = sum x x^T per group."""

    def __init__(self, node, weight_shape, seed):
        self.node = node["name"]
        self.op = node["op_type"]
        self.tensor = node["inputs"][0]
        self.rng = np.random.default_rng(seed)
        self.count = 0
        if self.op in ("Conv", "FusedConv"):
            self.spatial = len(weight_shape) - 2
            self.kernel = tuple(weight_shape[2:])
            self.strides = tuple(_attr(node, "strides", [1] * self.spatial))
            self.dilations = tuple(_attr(node, "dilations", [1] * self.spatial))
            self.pads = tuple(_attr(node, "pads", [0] * (2 * self.spatial)))
            self.group = int(_attr(node, "group", 1))
            self.k = int(weight_shape[1] * np.prod(self.kernel))
        else:
            self.spatial = 0
            self.group = 1
            gemm = self.op in ("Gemm", "FusedGemm")
            trans_b = gemm and int(_attr(node, "transB", 0))
            self.k = int(weight_shape[1] if trans_b else weight_shape[0])
        # sum x x^T per group; with group 1, only its lower triangle is
        # current while _mirrored is False (BLAS syrk writes one triangle).
        self._gram = np.zeros((self.group, self.k, self.k), np.float32)
        self._mirrored = True
        self._pending, self._pending_floats = [], 0
        # Columns sampled per image (per row of a Gemm's or MatMul's input).
        self.per_image = max(1, math.ceil(max(MIN_COLUMNS, 2 * self.k) / ASSUMED_IMAGES))

    def columns(self, x):
        """X [S, group, K]: sampled input columns of x."""
        if self.spatial == 0:
            rows = x.reshape(-1, x.shape[-1]) if self.op == "MatMul" else x.reshape(x.shape[0], -1)
            take = min(len(rows), self.per_image * x.shape[0])
            if take < len(rows):
                rows = rows[np.sort(self.rng.choice(len(rows), take, replace=False))]
            return rows.reshape(len(rows), 1, self.k)
        n, c = x.shape[:2]
        s = self.spatial
        pad = [(0, 0), (0, 0)] + [(self.pads[i], self.pads[i + s]) for i in range(s)]
        xp = np.pad(x, pad) if any(self.pads) else x
        extent = tuple(self.dilations[i] * (self.kernel[i] - 1) + 1 for i in range(s))
        win = np.lib.stride_tricks.sliding_window_view(xp, extent, axis=tuple(range(2, 2 + s)))
        # [n, c, out..., k...] after the strides (positions) and dilations (taps).
        win = win[(slice(None), slice(None)) + tuple(slice(None, None, st) for st in self.strides)
                  + tuple(slice(None, None, d) for d in self.dilations)]
        out = win.shape[2:2 + s]
        positions = int(np.prod(out))
        per_image = min(positions, self.per_image)
        if per_image < positions:
            flat = np.concatenate([np.sort(self.rng.choice(positions, per_image, replace=False)) for _ in range(n)])
        else:
            flat = np.tile(np.arange(positions), n)
        img = np.repeat(np.arange(n), per_image)
        idx = np.unravel_index(flat, out)
        patches = win[(img, slice(None)) + idx]  # [S, c, k...]
        return patches.reshape(len(img), self.group, self.k)

    def update(self, x):
        """Adds x's sampled columns (x may view the run's memory: the columns
        kept are copies)."""
        x = np.asarray(x, np.float32)
        cols = np.ascontiguousarray(self.columns(x).transpose(1, 0, 2))  # [group, S, K]
        if np.may_share_memory(cols, x):  # (every row of a Gemm's input: a view)
            cols = cols.copy()
        self.count += cols.shape[1]
        self._pending.append(cols)
        self._pending_floats += cols.size
        if self._pending_floats >= BUFFER_FLOATS:
            self._flush()

    @property
    def gram(self):
        """H = sum x x^T over every column seen, [group, K, K] (symmetric)."""
        self._flush()
        if not self._mirrored:
            g = self._gram[0]
            g[...] = np.tril(g) + np.tril(g, -1).T
            self._mirrored = True
        return self._gram

    def _flush(self):
        if not self._pending:
            return
        cols = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        self._pending, self._pending_floats = [], 0
        if self.group == 1 and _syrk_into(self._gram[0], cols[0]):
            self._mirrored = False
        else:
            self._gram += np.matmul(cols.transpose(0, 2, 1), cols)


def _syrk_into(acc, cols) -> bool:
    """acc's lower triangle += that of cols^T cols (acc [K, K] C-ordered,
    cols [S, K]), by BLAS syrk through scipy (half the products of a full
    matmul, and no copies: cols^T and acc^T are its column-major operands);
    False, touching nothing, without scipy."""
    try:
        from scipy.linalg import blas
    except ImportError:
        return False
    out = blas.ssyrk(1.0, cols.T, beta=1.0, c=acc.T, trans=0, lower=0, overwrite_c=1)
    if not np.shares_memory(out, acc):
        acc[...] = out.T
    return True


class GramCollector:
    """Input second moments of every weighted layer of a float graph, fed by
    the calibration run's tap (``__call__(tensor name, array)``)."""

    def __init__(self, graph):
        self.layers = {}
        self.by_tensor = {}
        for i, node in enumerate(graph.nodes()):
            if node["op_type"] not in _WEIGHTED or len(node["inputs"]) < 2:
                continue
            w = graph.constant(node["inputs"][1])
            if w is None or not node["inputs"][0]:
                continue
            conv = node["op_type"] in ("Conv", "FusedConv")
            if (w.ndim < 3) if conv else (w.ndim != 2 or int(_attr(node, "transA", 0))):
                continue
            layer = _Layer(node, w.shape, seed=i)
            self.layers[layer.node] = layer
            self.by_tensor.setdefault(layer.tensor, []).append(layer)

    def tensors(self) -> list:
        return list(self.by_tensor)

    def __call__(self, name, array):
        for layer in self.by_tensor.get(name, ()):
            layer.update(array)


def _upper_inverse_factor(h):
    """U, upper triangular, with U^T U = h^-1 (h symmetric positive
    definite, [K, K] or stacked [G, K, K]): with P the order reversal,
    P h P = L L^T (Cholesky, lower) and U = P L^-1 P (returned as a view
    with negative strides). One Cholesky and one triangular inverse:
    LAPACK's potrf and trtri through scipy when it is installed (in place on
    the Fortran-ordered transpose of the reversed copy, which is itself as h
    is symmetric: no layout copies; several times faster than numpy's
    cholesky on large K), else numpy's cholesky and general inverse (also
    for stacks)."""
    reversed_h = np.ascontiguousarray(h[..., ::-1, ::-1])
    try:
        if reversed_h.ndim != 2:
            raise ImportError
        from scipy.linalg import lapack
    except ImportError:
        inv = np.linalg.inv(np.linalg.cholesky(reversed_h))
    else:
        single = reversed_h.dtype == np.float32
        potrf, trtri = (lapack.spotrf, lapack.strtri) if single else (lapack.dpotrf, lapack.dtrtri)
        lower, info = potrf(reversed_h.T, lower=1, clean=1, overwrite_a=1)
        if info == 0:
            inv, info = trtri(lower, lower=1, overwrite_c=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"LAPACK potrf/trtri info {info}")
    return inv[..., ::-1, ::-1]


def _safe(scale):
    """The scales with 0 (an all-zero channel) replaced by 1."""
    return np.where(scale > 0, scale, np.float32(1.0))


def _nearest(w, safe):
    return np.clip(np.rint(w / safe[..., None]), -QMAX, QMAX)


def gptq_round(w, scale, gram, damping=DAMPING, block=BLOCK):
    """int8 levels of w [M, K] (scale [M] per row) rounded by GPTQ for inputs
    of second moments gram [K, K]; or of G groups at once (w [G, M, K],
    scale [G, M], gram [G, K, K]: a grouped conv). Where gram says nothing
    (inputs always 0) the columns keep nearest rounding and pass no error
    on. float32, as GPTQ's reference."""
    single = np.ndim(w) == 2
    w = np.array(w, np.float32, ndmin=3)
    scale = np.asarray(scale, np.float32).reshape(w.shape[0], -1)
    safe = _safe(scale)
    k = w.shape[2]
    h = np.array(gram, np.float32, ndmin=3)
    diag = np.einsum("gkk->gk", h)  # a writable view of the diagonals
    diag[diag <= 0] = 1.0
    diag += np.float32(damping) * diag.mean(1, keepdims=True)
    try:
        hinv = _upper_inverse_factor(h[0] if len(h) == 1 else h)
    except np.linalg.LinAlgError:
        q = _nearest(w, safe)
    else:
        hinv = hinv.reshape(h.shape)
        q = np.empty(w.shape, np.float32)
        for b0 in range(0, k, block):
            b1 = min(k, b0 + block)
            # The block's columns in order (quant/gptq_block.h): each rounded,
            # its error passed on to the block's later columns.
            wb = w[:, :, b0:b1].copy()
            q[:, :, b0:b1], err = _core.gptq_block(wb, hinv[:, b0:b1, b0:b1], safe)
            w[:, :, b1:] -= err @ hinv[:, b0:b1, b1:]
    q = q.astype(np.int8)
    return q[0] if single else q


# Rows of a layer the report's error ratio is measured on (it costs M K^2).
REPORT_ROWS = 64


def _output_error(w, q, scale, gram):
    """sum over groups and (up to REPORT_ROWS) rows of dW H dW^T."""
    rows = slice(0, REPORT_ROWS)
    d = w[:, rows] - q[:, rows].astype(np.float32) * scale[:, rows, None]
    return float(np.sum(np.matmul(d, gram) * d, dtype=np.float64))


def _weight_matrix(op, node, w):
    """(W as [M, K] per group stacked [G, M/G, K], to_original(levels))."""
    if op in ("Conv", "FusedConv"):
        group = int(_attr(node, "group", 1))
        m = w.shape[0]
        mat = w.reshape(group, m // group, -1)
        return mat, lambda levels: levels.reshape(w.shape)
    if op in ("Gemm", "FusedGemm") and int(_attr(node, "transB", 0)):
        return w[None], lambda levels: levels.reshape(w.shape)
    return w.T[None], lambda levels: np.ascontiguousarray(levels[0].T)


def apply(qgraph, float_graph, summary, collector, memo=None) -> dict:
    """Replaces the int8 weights of qgraph (insert_qdq's output, summary its
    result) by GPTQ's rounding, for every weight read by one layer that the
    collector has statistics for. memo (a dict kept by the caller) holds the
    rounding per float weight, for the next Q/DQ graph of the same session
    (the accuracy search builds one per candidate). Returns a report for the
    metadata."""
    memo = {} if memo is None else memo
    nodes = qgraph.nodes()
    by_name = {n["name"]: n for n in nodes}
    producer = {o: n for n in nodes for o in n["outputs"]}
    ratios = []
    skipped = []
    for wname, consumers in summary["weight_consumers"].items():
        layer = collector.layers.get(consumers[0]) if len(consumers) == 1 else None
        node = by_name.get(consumers[0])
        if layer is None or node is None or layer.count == 0:
            skipped.append(wname)
            continue
        dq = producer.get(node["inputs"][1])
        w = float_graph.constant(wname)
        if dq is None or dq["op_type"] != "DequantizeLinear" or w is None:
            skipped.append(wname)
            continue
        qname, sname = dq["inputs"][0], dq["inputs"][1]
        if wname not in memo:
            mats, to_original = _weight_matrix(node["op_type"], node, np.asarray(w, np.float32))
            scale = np.asarray(qgraph.constant(sname), np.float32).reshape(-1)
            scale = np.broadcast_to(scale, (mats.shape[0] * mats.shape[1],)).reshape(mats.shape[:2])
            gram = layer.gram / np.float32(max(layer.count, 1))
            levels = gptq_round(mats, scale, gram)
            before = _output_error(mats, _nearest(mats, _safe(scale)), scale, gram)
            after = _output_error(mats, levels, scale, gram)
            memo[wname] = (to_original(levels).astype(np.int8), after / before if before > 0 else None)
        levels, ratio = memo[wname]
        qgraph.add_initializer(qname, levels)
        if ratio is not None:
            ratios.append(ratio)
    return {"method": "gptq", "layers": len(ratios), "nearest_rounding": skipped,
            "output_error_vs_nearest": {"median": float(np.median(ratios)) if ratios else None,
                                        "max": float(np.max(ratios)) if ratios else None}}
