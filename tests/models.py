"""The test model zoo (pyengine.zoo) plus the onnxruntime reference runner."""

from pyengine.zoo import *  # noqa: F401,F403
from pyengine.zoo import ZOO, make_input  # noqa: F401


def run_onnxruntime(model, feeds, optimize=True):
    """Runs ``model`` on the onnxruntime CPU provider (the reference).

    Args:
        model: an ``onnx.ModelProto``.
        feeds: {input name: array}.
        optimize: ORT_ENABLE_ALL graph optimizations if True, else ORT_DISABLE_ALL.

    Returns:
        {output name: np.ndarray}.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))
