"""Complete a Q/DQ graph with QAT's scales so that ONNX Runtime runs every quantized layer in int8.

ONNX Runtime fuses a convolution into ``QLinearConv`` only as the node unit DequantizeLinear (input,
weight) -> Conv -> QuantizeLinear: its int8 convolution writes int8, so its output needs a scale. A
Gemm becomes ``QGemm``, which may write float, only if its bias is int32 behind a DequantizeLinear.
QAT quantizes each layer's input and weight (objectives/qdq.py), which gives an output scale to a
convolution followed by a ReLU and the next layer (a residual block's first one) and no other: a
block's second convolution and its shortcut feed a float addition, the classifier writes the logits.
OpenVINO runs those in int8 with a float output; ONNX Runtime runs them in f32 on dequantized weights.
Three rewrites of the graph make them int8, with QAT's input and weight scales unchanged:

- a tensor QAT quantized for one consumer (a block's input, quantized for its first convolution) is
  read quantized by its additions too: the identity input comes from that DequantizeLinear;
- a quantized convolution with no quantized output gets a QuantizeLinear/DequantizeLinear pair on
  it, at the symmetric scale of the largest magnitude the calibration images reach there: the one
  tensor QAT never observed (its forward quantizes inputs and weights, not outputs). The addition
  then has quantized inputs and, where its ReLU's result is quantized again, runs as ``QLinearAdd``;
- a quantized Gemm's float bias becomes int32 at the product of its input's and weight's scales,
  the standard bias quantization, so the logits stay float.

Plain ``onnx`` graph surgery (no PyTorch: the slim agent runs it); the optimised graph's node types
say what came of it (devices/onnxruntime.py).
"""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

CALIBRATION_BATCH = 32


class _Graph:
    """Producers, consumers and constant values of an ONNX graph (re-read after each rewrite)."""

    def __init__(self, graph):
        self.graph = graph
        self.initializers = {i.name: i for i in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers = collections.defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def constant(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant":
            return numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
        return None

    def dequantized(self, name: str):
        """The DequantizeLinear producing ``name``, or None."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def dequantized_activation(self, name: str):
        """The DequantizeLinear producing ``name`` from a QuantizeLinear of an activation (not a weight)."""
        dq = self.dequantized(name)
        q = dq is not None and self.producer.get(dq.input[0])
        return dq if q and q.op_type == "QuantizeLinear" and self.constant(q.input[0]) is None else None

    def quantized_downstream(self, name: str) -> bool:
        """Only QuantizeLinear ops read ``name``, directly or through one ReLU (ONNX Runtime fuses a ReLU
        into a following QuantizeLinear with zero point 0)."""
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == "Relu":
            users = self.consumers.get(users[0].output[0], [])
        return bool(users) and all(u.op_type == "QuantizeLinear" for u in users)

    def quantized_layers(self):
        """Conv and Gemm nodes whose input and weight both come from DequantizeLinear."""
        return [node for node in self.graph.node if node.op_type in ("Conv", "Gemm") and len(node.input) >= 2
                and self.dequantized_activation(node.input[0]) is not None and self.dequantized(node.input[1]) is not None]


def share_quantized_inputs(graph) -> int:
    """Additions read a tensor QAT quantized for another consumer through its DequantizeLinear; how many inputs."""
    g = _Graph(graph)
    rewired = 0
    for name, users in list(g.consumers.items()):
        pairs = [dq for q in users if q.op_type == "QuantizeLinear"
                 for dq in g.consumers.get(q.output[0], []) if dq.op_type == "DequantizeLinear"]
        if not pairs or name in g.initializers:
            continue
        for user in users:
            if user.op_type == "Add":
                for i, value in enumerate(user.input):
                    if value == name:
                        user.input[i] = pairs[0].output[0]
                        rewired += 1
    return rewired


def quantize_gemm_biases(graph) -> int:
    """The float bias of each quantized Gemm whose output nothing quantizes, as int32 behind a DequantizeLinear."""
    from onnx import helper, numpy_helper

    g = _Graph(graph)
    inserts = []
    for node in g.quantized_layers():
        if node.op_type != "Gemm" or len(node.input) < 3 or g.quantized_downstream(node.output[0]):
            continue
        bias = g.constant(node.input[2])
        x_dq, w_dq = g.dequantized(node.input[0]), g.dequantized(node.input[1])
        x_scale, w_scale = g.constant(x_dq.input[1]), g.constant(w_dq.input[1])
        if bias is None or bias.ndim != 1 or x_scale is None or w_scale is None or x_scale.size != 1:
            continue
        scale = (x_scale.astype(np.float64) * w_scale.astype(np.float64)).astype(np.float32).reshape(-1)
        if scale.size == 1:
            scale = scale.reshape(())
        q = np.round(bias / scale).astype(np.int32)
        base = node.name + "/bias"
        graph.initializer.extend([numpy_helper.from_array(q, f"{base}/quantized"),
                                  numpy_helper.from_array(scale, f"{base}/scale")])
        dq = helper.make_node("DequantizeLinear", [f"{base}/quantized", f"{base}/scale"], [f"{base}/dequantized"],
                              name=f"{base}/DequantizeLinear", **({"axis": 0} if scale.ndim else {}))
        if node.input[2] in g.initializers and len(g.consumers[node.input[2]]) == 1:  # else ONNX Runtime warns on load
            graph.initializer.remove(g.initializers[node.input[2]])
        node.input[2] = f"{base}/dequantized"
        inserts.append((node, [dq]))
    _insert_before(graph, inserts)
    return len(inserts)


def unquantized_conv_outputs(graph) -> list[str]:
    """Outputs of quantized convolutions that nothing quantizes."""
    g = _Graph(graph)
    return [node.output[0] for node in g.quantized_layers()
            if node.op_type == "Conv" and not g.quantized_downstream(node.output[0])]


def observed_ranges(model, names: list[str], calibration: np.ndarray, input_name: str) -> dict[str, tuple[float, float]]:
    """(min, max) of each tensor in ``names`` over ``calibration``, run by ONNX Runtime without graph optimisation."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low, high = dict.fromkeys(names, np.inf), dict.fromkeys(names, -np.inf)
    for i in range(0, len(calibration), CALIBRATION_BATCH):
        batch = np.ascontiguousarray(calibration[i:i + CALIBRATION_BATCH], np.float32)
        for name, value in zip(names, session.run(names, {input_name: batch})):
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
    return {name: (low[name], high[name]) for name in names}


def quantize_outputs(graph, ranges: dict[str, tuple[float, float]]) -> None:
    """A QuantizeLinear/DequantizeLinear pair on each tensor of ``ranges``, read by its consumers (a graph
    output keeps the float value): symmetric int8 at the scale of its largest magnitude, uint8 (over
    twice the range, zero point 0) where it was never below zero."""
    from onnx import helper, numpy_helper

    g = _Graph(graph)
    inserts = []
    for name, (low, high) in ranges.items():
        unsigned = low >= 0
        scale = np.float32(max(abs(low), abs(high), 1e-12) / (255 if unsigned else 127))
        base = g.producer[name].name + "/output_quantizer"  # under the layer's scope, unique as its node
        graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{base}/scale"),
                                  numpy_helper.from_array(np.array(0, np.uint8 if unsigned else np.int8), f"{base}/zero_point")])
        for user in g.consumers.get(name, []):
            for i, value in enumerate(user.input):
                if value == name:
                    user.input[i] = f"{base}/dequantized"
        pair = [helper.make_node("QuantizeLinear", [name, f"{base}/scale", f"{base}/zero_point"], [f"{base}/quantized"],
                                 name=f"{base}/QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{base}/quantized", f"{base}/scale", f"{base}/zero_point"],
                                 [f"{base}/dequantized"], name=f"{base}/DequantizeLinear")]
        inserts.append((g.consumers[name][0] if g.consumers.get(name) else None, pair))
    _insert_before(graph, inserts)


def _insert_before(graph, inserts: list[tuple]) -> None:
    """Insert each (node, new nodes) pair's new nodes before that node (at the end for None), keeping the node
    list in topological order; nodes are matched by their outputs (SSA: unique), the list rebuilt once."""
    before = collections.defaultdict(list)
    for node, new in inserts:
        before[tuple(node.output) if node is not None else None].extend(new)
    nodes = []
    for node in graph.node:
        nodes.extend(before.pop(tuple(node.output), []))
        nodes.append(node)
    nodes.extend(new for pending in before.values() for new in pending)
    del graph.node[:]
    graph.node.extend(nodes)


def complete_for_onnxruntime(source: Path, target: Path, calibration: np.ndarray | None, input_name: str) -> Path:
    """``source``'s Q/DQ graph with the module's three rewrites, saved to ``target``; without calibration
    images, convolutions without a quantized output stay as they are."""
    import onnx

    model = onnx.load(str(source))
    share_quantized_inputs(model.graph)
    quantize_gemm_biases(model.graph)
    names = unquantized_conv_outputs(model.graph)
    if names and calibration is not None and len(calibration):
        quantize_outputs(model.graph, observed_ranges(model, names, calibration, input_name))
    onnx.save(model, str(target))
    return target
